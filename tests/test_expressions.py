"""The expression language: every operator and function against NumPy/awkward computed
directly (jagged columns with empty events), the typing rules, and one case per failure mode
asserting that the message names the expression, the place and the fix."""

from __future__ import annotations

import builtins
import re

import awkward as ak
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rootml.exceptions import ConfigError, ExpressionError
from rootml.expressions import (
    Kind,
    check,
    evaluate,
    order,
    parse,
    per_object,
    require_event_level,
    require_object_level,
)

N = 200


def _jagged(rng, counts, values):
    return ak.unflatten(values, counts)


@pytest.fixture(scope="module")
def cols():
    rng = np.random.default_rng(7)
    counts = rng.integers(0, 6, N)
    counts[:5] = [0, 1, 2, 0, 5]  # empty events first and in the middle
    muons = rng.integers(0, 3, N)
    total = int(counts.sum())
    met = rng.exponential(40, N)
    met[::17] = 0.0  # division by zero
    return {
        "HT": rng.uniform(0, 800, N),
        "MET": met,
        "njet": counts.astype(np.int32),
        "flag": rng.random(N) < 0.5,
        "Jet_pt": ak.unflatten(rng.exponential(40, total).astype(np.float32), counts),
        "Jet_eta": ak.unflatten(rng.normal(0, 2, total), counts),
        "Jet_btag": ak.unflatten(rng.random(total), counts),
        "Jet_nConst": ak.unflatten(rng.integers(1, 40, total).astype(np.int32), counts),
        "Jet_tight": ak.unflatten(rng.random(total) < 0.3, counts),
        "Muon_pt": ak.unflatten(rng.exponential(20, int(muons.sum())), muons),
        "Jet.PT": ak.unflatten(rng.exponential(40, total), counts),
    }


NUMBER, JET = Kind(None, False), Kind("Jet", False)
#: what a caller knows from BranchInfo (collection and dtype); "Jet_btag" and "Jet.PT" are given
#: by their collection only, as a caller without dtypes would
KINDS = {
    "HT": NUMBER, "MET": NUMBER, "njet": NUMBER, "flag": Kind(None, True), "Jet_pt": JET,
    "Jet_eta": JET, "Jet_btag": "Jet", "Jet_nConst": JET, "Jet_tight": Kind("Jet", True),
    "Muon_pt": Kind("Muon", False), "Jet.PT": "Jet",
}  # fmt: skip


def run(source: str, columns, where: str = "new_variables.x"):
    expr = parse(source, where)
    check(expr, KINDS)
    return evaluate(expr, columns)


def assert_same(result, expected, dtype: bool = True) -> None:
    """Equal values (NaN equal to NaN), the same per-event/per-object structure and dtype."""
    if isinstance(expected, ak.Array) and expected.ndim == 2:
        assert isinstance(result, ak.Array)
        np.testing.assert_array_equal(ak.to_numpy(ak.num(result)), ak.to_numpy(ak.num(expected)))
        got, want = ak.to_numpy(ak.flatten(result)), ak.to_numpy(ak.flatten(expected))
    else:
        assert isinstance(result, np.ndarray)
        got = result
        want = ak.to_numpy(expected) if isinstance(expected, ak.Array) else np.asarray(expected)
        assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    if dtype:
        assert got.dtype == want.dtype, (got.dtype, want.dtype)


# ---------------------------------------------------------------------------------------------
# operators and functions against NumPy / awkward

OPERATORS = [
    ("HT + MET", lambda c: c["HT"] + c["MET"]),
    ("HT - MET", lambda c: c["HT"] - c["MET"]),
    ("HT * MET", lambda c: c["HT"] * c["MET"]),
    ("HT / MET", lambda c: c["HT"] / c["MET"]),
    ("HT // MET", lambda c: c["HT"] // c["MET"]),
    ("HT % MET", lambda c: c["HT"] % c["MET"]),
    ("HT ** 0.5", lambda c: c["HT"] ** 0.5),
    ("njet ** 2", lambda c: c["njet"] ** 2),
    ("-HT", lambda c: -c["HT"]),
    ("+HT", lambda c: +c["HT"]),
    ("njet // 2 + njet % 3", lambda c: c["njet"] // 2 + c["njet"] % 3),
    ("HT < MET", lambda c: c["HT"] < c["MET"]),
    ("HT <= 300", lambda c: c["HT"] <= 300),
    ("HT > 300", lambda c: c["HT"] > 300),
    ("njet >= 4", lambda c: c["njet"] >= 4),
    ("njet == 2", lambda c: c["njet"] == 2),
    ("njet != 2", lambda c: c["njet"] != 2),
    ("(HT > 300) & flag", lambda c: (c["HT"] > 300) & c["flag"]),
    ("(HT > 300) | flag", lambda c: (c["HT"] > 300) | c["flag"]),
    ("(HT > 300) ^ flag", lambda c: (c["HT"] > 300) ^ c["flag"]),
    ("~flag", lambda c: ~c["flag"]),
    ("Jet_pt + Jet_eta", lambda c: c["Jet_pt"] + c["Jet_eta"]),
    ("Jet_pt - 2 * Jet_eta", lambda c: c["Jet_pt"] - 2 * c["Jet_eta"]),
    ("Jet_pt * HT", lambda c: c["Jet_pt"] * c["HT"]),
    ("HT / Jet_pt", lambda c: c["HT"] / c["Jet_pt"]),
    ("Jet_pt / Jet_eta", lambda c: c["Jet_pt"] / c["Jet_eta"]),
    ("Jet_nConst // 3", lambda c: c["Jet_nConst"] // 3),
    ("Jet_nConst % njet", lambda c: c["Jet_nConst"] % c["njet"]),
    ("Jet_pt ** 2", lambda c: c["Jet_pt"] ** 2),
    ("-Jet_eta", lambda c: -c["Jet_eta"]),
    ("Jet_pt > 25", lambda c: c["Jet_pt"] > 25),
    ("Jet_pt >= HT / 10", lambda c: c["Jet_pt"] >= c["HT"] / 10),
    ("Jet_nConst == njet", lambda c: c["Jet_nConst"] == c["njet"]),
    ("(Jet_pt > 25) & (abs(Jet_eta) < 2.4)", lambda c: (c["Jet_pt"] > 25) & (abs(c["Jet_eta"]) < 2.4)),
    ("(Jet_pt > 25) | flag", lambda c: (c["Jet_pt"] > 25) | c["flag"]),
    ("Jet_tight ^ (Jet_btag > 0.5)", lambda c: c["Jet_tight"] ^ (c["Jet_btag"] > 0.5)),
    ("~Jet_tight", lambda c: ~c["Jet_tight"]),
    ("Jet_pt * Jet_tight", lambda c: c["Jet_pt"] * c["Jet_tight"]),  # stays float32
    ("Jet_pt - Jet_tight", lambda c: c["Jet_pt"] - c["Jet_tight"]),
    ("(HT > 300) - flag", lambda c: (c["HT"] > 300).astype(np.int64) - c["flag"]),
    ("-flag", lambda c: -c["flag"].astype(np.int64)),
    ("Jet.PT * 2", lambda c: c["Jet.PT"] * 2),
]  # fmt: skip


@pytest.mark.parametrize(("source", "reference"), OPERATORS, ids=[o[0] for o in OPERATORS])
def test_operators_give_what_numpy_and_awkward_give(cols, source, reference):
    with np.errstate(all="ignore"):
        expected = reference(cols)
    assert_same(run(source, cols), expected)


def _ufunc(name):
    return lambda c, name=name: getattr(np, name)(c["Jet_eta"])


UNARY = [
    "abs", "sqrt", "log", "log10", "exp", "sin", "cos", "tan", "arcsin", "arccos", "arctan",
    "sinh", "cosh", "tanh", "floor", "ceil", "round", "isfinite",
]  # fmt: skip


@pytest.mark.parametrize("name", UNARY)
@pytest.mark.parametrize("column", ["Jet_eta", "HT", "Jet_pt"])
def test_functions_give_what_numpy_gives_without_warnings(cols, name, column):
    """Negative logs and square roots, arcsin beyond 1: NaN, never a warning (the suite turns
    warnings into errors)."""
    source = f"{name}({column} - 1)"
    with np.errstate(all="ignore"):
        expected = getattr(np, name)(cols[column] - 1)
    assert_same(run(source, cols), expected)


@pytest.mark.parametrize(
    ("source", "reference"),
    [
        ("arctan2(Jet_eta, Jet_pt)", lambda c: np.arctan2(c["Jet_eta"], c["Jet_pt"])),
        ("hypot(HT, MET)", lambda c: np.hypot(c["HT"], c["MET"])),
        ("min(HT, MET)", lambda c: np.minimum(c["HT"], c["MET"])),
        ("max(Jet_pt, 30)", lambda c: np.maximum(c["Jet_pt"], 30)),
        ("min(Jet_eta, HT / 100)", lambda c: np.minimum(c["Jet_eta"], c["HT"] / 100)),
        ("where(HT > 0, MET / HT, 0)", lambda c: np.where(c["HT"] > 0, c["MET"] / c["HT"], 0)),
        ("where(MET > 0, HT / MET, -1)", lambda c: np.where(c["MET"] > 0, c["HT"] / c["MET"], -1)),
        (
            "arctan2(sin(HT - MET), cos(HT - MET))",
            lambda c: np.arctan2(np.sin(c["HT"] - c["MET"]), np.cos(c["HT"] - c["MET"])),
        ),
        (
            "where(Jet_pt > 30, Jet_pt, HT)",
            lambda c: ak.where(c["Jet_pt"] > 30, c["Jet_pt"], c["HT"]),
        ),
    ],
)
def test_two_and_three_argument_functions(cols, source, reference):
    with np.errstate(all="ignore"):
        expected = reference(cols)
    assert_same(run(source, cols), expected)


@pytest.mark.parametrize("prefix", ["np.", "numpy."])
@pytest.mark.parametrize(
    "call", ["abs(Jet_eta)", "sqrt(HT)", "arctan2(HT, MET)", "where(flag, HT, MET)", "sum(Jet_pt)"]
)
def test_numpy_prefixes_name_the_same_functions(cols, prefix, call):
    expr = parse(prefix + call, "weight")
    assert expr.functions == parse(call, "weight").functions
    assert_same(evaluate(expr, cols), evaluate(parse(call, "weight"), cols))


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("np.minimum(HT, MET)", "min(HT, MET)"),
        ("np.maximum(Jet_pt, 30)", "max(Jet_pt, 30)"),
        ("np.absolute(Jet_eta)", "abs(Jet_eta)"),
        ("np.amax(Jet_pt)", "max(Jet_pt)"),
        ("atan2(HT, MET)", "arctan2(HT, MET)"),
    ],
)
def test_numpy_names_of_functions(cols, alias, name):
    assert_same(run(alias, cols), run(name, cols))


# ---------------------------------------------------------------------------------------------
# reductions and indexing


def _filled(array):
    return ak.to_numpy(ak.fill_none(array, np.nan))


REDUCTIONS = [
    ("sum(Jet_pt)", lambda c: ak.sum(c["Jet_pt"], axis=1)),
    ("sum(Jet_nConst)", lambda c: ak.sum(c["Jet_nConst"], axis=1)),
    ("sum(Jet_pt > 30)", lambda c: ak.sum(c["Jet_pt"] > 30, axis=1)),
    ("count(Jet_pt)", lambda c: ak.num(c["Jet_pt"], axis=1)),
    ("count(Jet_pt > 30)", lambda c: ak.count_nonzero(c["Jet_pt"] > 30, axis=1)),
    ("any(Jet_btag > 0.5)", lambda c: ak.any(c["Jet_btag"] > 0.5, axis=1)),
    ("all(Jet_btag > 0.1)", lambda c: ak.all(c["Jet_btag"] > 0.1, axis=1)),
    ("any(Jet_tight)", lambda c: ak.any(c["Jet_tight"], axis=1)),
    ("min(Jet_eta)", lambda c: _filled(ak.min(c["Jet_eta"], axis=1))),
    ("max(Jet_pt)", lambda c: _filled(ak.max(c["Jet_pt"], axis=1))),
    ("max(Jet_pt * HT)", lambda c: _filled(ak.max(c["Jet_pt"] * c["HT"], axis=1))),
    ("mean(Jet_eta)", lambda c: _filled(ak.mean(c["Jet_eta"], axis=1, mask_identity=True))),
    ("sum(Jet_pt[Jet_pt > 0])", None),  # refused: see the failure modes
]


@pytest.mark.parametrize(
    ("source", "reference"), REDUCTIONS[:-1], ids=[r[0] for r in REDUCTIONS[:-1]]
)
def test_reductions_give_what_awkward_gives(cols, source, reference):
    expected = reference(cols)
    np.testing.assert_allclose(run(source, cols), ak.to_numpy(expected), rtol=1e-6)


def test_min_and_max_skip_nan_as_awkward_does():
    columns = {"x": ak.Array([[1.0, np.nan, 3.0], [np.nan, 2.0], [np.nan]])}
    np.testing.assert_array_equal(evaluate(parse("max(x)", "v"), columns), [3.0, 2.0, -np.inf])
    np.testing.assert_array_equal(evaluate(parse("min(x)", "v"), columns), [1.0, 2.0, np.inf])
    np.testing.assert_array_equal(evaluate(parse("sum(x)", "v"), columns), [np.nan] * 3)


def test_integer_min_and_max_are_float_with_nan_for_empty_events(cols):
    result = run("max(Jet_nConst)", cols)
    assert result.dtype == np.float64
    np.testing.assert_array_equal(result, _filled(ak.max(cols["Jet_nConst"], axis=1)))


def test_reductions_of_empty_events():
    """Documented: sum 0, count 0, any False, all True, min/max/mean NaN."""
    columns = {"x": ak.Array([[], [1.0, 3.0], []]), "b": ak.Array([[], [True, False], []])}
    got = {
        s: evaluate(parse(s, "new_variables.t"), columns)
        for s in [
            "sum(x)",
            "count(x)",
            "count(b)",
            "any(b)",
            "all(b)",
            "min(x)",
            "max(x)",
            "mean(x)",
        ]
    }
    np.testing.assert_array_equal(got["sum(x)"], [0.0, 4.0, 0.0])
    np.testing.assert_array_equal(got["count(x)"], [0, 2, 0])
    np.testing.assert_array_equal(got["count(b)"], [0, 1, 0])
    np.testing.assert_array_equal(got["any(b)"], [False, True, False])
    np.testing.assert_array_equal(got["all(b)"], [True, False, True])
    np.testing.assert_array_equal(got["min(x)"], [np.nan, 1.0, np.nan])
    np.testing.assert_array_equal(got["max(x)"], [np.nan, 3.0, np.nan])
    np.testing.assert_array_equal(got["mean(x)"], [np.nan, 2.0, np.nan])


def test_all_events_empty():
    columns = {"x": ak.Array([[], []]), "HT": np.array([1.0, 2.0])}
    np.testing.assert_array_equal(evaluate(parse("sum(x)", "w"), columns), [0.0, 0.0])
    np.testing.assert_array_equal(evaluate(parse("x[0]", "w"), columns), [np.nan, np.nan])
    assert ak.to_list(evaluate(parse("x * HT", "w"), columns)) == [[], []]


@pytest.mark.parametrize("k", [0, 1, 2, 4, 5, 9, -1, -2, -5, -6])
@pytest.mark.parametrize("column", ["Jet_pt", "Jet_eta", "Jet_nConst"])
def test_indexing_past_the_end_gives_nan(cols, column, k):
    result = run(f"{column}[{k}]", cols)
    assert result.dtype == (np.float32 if column == "Jet_pt" else np.float64)
    expected = [row[k] if -len(row) <= k < len(row) else np.nan for row in cols[column].tolist()]
    np.testing.assert_array_equal(result, np.asarray(expected, dtype=result.dtype))


def test_indexing_a_condition_gives_false_for_missing_objects(cols):
    result = run("(Jet_pt > 30)[1]", cols)
    expected = [len(row) > 1 and row[1] > 30 for row in cols["Jet_pt"].tolist()]
    np.testing.assert_array_equal(result, expected)
    assert result.dtype == np.bool_


def test_indexing_a_computed_value(cols):
    expected = _filled(ak.firsts(cols["Jet_pt"] * cols["HT"]))
    np.testing.assert_allclose(run("(Jet_pt * HT)[0]", cols), expected, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# comparisons, logic, precedence


@pytest.mark.parametrize(
    ("chained", "explicit"),
    [
        ("0 < HT < 300", "(0 < HT) & (HT < 300)"),
        ("100 <= HT < MET * 10 <= 700", "(100 <= HT) & (HT < MET * 10) & (MET * 10 <= 700)"),
        ("1 < abs(Jet_eta) < 2.4", "(1 < abs(Jet_eta)) & (abs(Jet_eta) < 2.4)"),
        ("HT > 300 and njet >= 4", "(HT > 300) & (njet >= 4)"),
        ("HT > 300 or not flag", "(HT > 300) | ~flag"),
        ("not (HT > 300 and flag)", "~((HT > 300) & flag)"),
        ("HT > 1 or flag and MET > 2", "(HT > 1) | (flag & (MET > 2))"),
        # & and | bind looser than comparisons, as ROOT's && and pandas' query read them
        ("njet >= 4 & HT > 300 & flag", "(njet >= 4) & (HT > 300) & flag"),
        ("HT > 700 | njet > 3 & MET < 20", "(HT > 700) | ((njet > 3) & (MET < 20))"),
        ("Jet_pt > 25 & abs(Jet_eta) < 2.4", "(Jet_pt > 25) & (abs(Jet_eta) < 2.4)"),
    ],
)
def test_chains_words_and_precedence(cols, chained, explicit):
    assert_same(run(chained, cols), run(explicit, cols))


def test_the_selection_of_the_brief(cols):
    source = "njet >= 4 & (HT > 300) & any(Jet_btag > 0.5)"
    expected = (
        (cols["njet"] >= 4)
        & (cols["HT"] > 300)
        & ak.to_numpy(ak.any(cols["Jet_btag"] > 0.5, axis=1))
    )
    expr = parse(source, "selection")
    require_event_level(expr, check(expr, KINDS), condition=True)
    assert_same(evaluate(expr, cols), expected)
    assert 0 < expected.sum() < N  # the cut keeps some events and drops others


def test_conditions_count_one_in_arithmetic(cols):
    expected = (cols["HT"] > 300).astype(np.int64) + (cols["MET"] > 20).astype(np.int64)
    assert_same(run("(HT > 300) + (MET > 20)", cols), expected)
    assert_same(run("sum(Jet_tight)", cols), ak.sum(cols["Jet_tight"], axis=1))


def test_integer_powers_that_numpy_refuses_are_float(cols):
    with np.errstate(divide="ignore"):
        expected = cols["njet"].astype(np.float64) ** -1
    assert_same(run("njet ** -1", cols), expected)
    assert_same(run("2 ** njet", cols), 2.0 ** cols["njet"].astype(np.float64))


def test_constants_become_one_value_per_event(cols):
    assert_same(run("1.0", cols), np.ones(N))
    assert_same(evaluate(parse("2 * 3", "weight"), {}, n_events=4), np.full(4, 6))
    assert_same(evaluate(parse("True", "selection"), {}, n_events=2), [True, True])


def test_a_jagged_result_is_var_lists_like_uproots(cols):
    result = run("Jet_pt * 2", cols)
    assert str(result.type).endswith("var * float32")
    assert ak.to_list(result[:5]) == [
        [],
        [2 * x for x in cols["Jet_pt"][1].tolist()],
        *ak.to_list(result[2:5]),
    ]


def test_fixed_size_arrays_are_per_object(cols):
    grid = np.arange(12.0).reshape(4, 3)
    columns = {"p": grid, "q": ak.Array(grid), "w": np.arange(4.0)}
    assert_same(evaluate(parse("sum(p * w)", "x"), columns), (grid * columns["w"][:, None]).sum(1))
    assert_same(evaluate(parse("q[-1] + p[0]", "x"), columns), grid[:, -1] + grid[:, 0])


def test_flat_awkward_columns_are_numpy(cols):
    columns = {"HT": ak.Array(cols["HT"]), "Jet_pt": cols["Jet_pt"]}
    result = evaluate(parse("HT + sum(Jet_pt)", "x"), columns)
    assert isinstance(result, np.ndarray)
    np.testing.assert_allclose(
        result, cols["HT"] + ak.to_numpy(ak.sum(cols["Jet_pt"], axis=1)), rtol=1e-6
    )


def test_the_inputs_are_not_changed(cols):
    before = cols["HT"].copy(), ak.to_list(cols["Jet_pt"])
    run("where(HT > 300, HT, 0) + sum(Jet_pt > 3)", cols)
    np.testing.assert_array_equal(cols["HT"], before[0])
    assert ak.to_list(cols["Jet_pt"]) == before[1]


def test_nothing_is_run_through_eval_exec_or_compile(cols, monkeypatch):
    expr = parse("where(HT > 0, MET / HT, 0) + max(Jet_pt) + Jet_eta[0]", "x")

    def refuse(*args, **kwargs):
        raise AssertionError("eval/exec/compile called")

    for name in ("eval", "exec", "compile"):
        monkeypatch.setattr(builtins, name, refuse)
    check(expr, KINDS)
    evaluate(expr, cols)


# ---------------------------------------------------------------------------------------------
# the parsed expression and its kind


def test_names_and_functions_in_first_use_order():
    expr = parse("sum(b) + abs(a) * b + Jet.PT[0] + sum(a)", "new_variables.x")
    assert expr.names == ("b", "a", "Jet.PT")
    assert expr.functions == ("sum", "abs")
    assert expr.source == "sum(b) + abs(a) * b + Jet.PT[0] + sum(a)"
    assert expr.where == "new_variables.x"
    assert parse("0 < x < 5", "s").names == ("x",)


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ("HT", Kind(None, False)),
        ("flag", Kind(None, True)),
        ("Jet_pt", Kind("Jet", False)),
        ("Jet_btag", Kind("Jet", None)),  # given by its collection only: a condition or not
        ("Jet_pt > 3", Kind("Jet", True)),
        ("Jet_pt * HT", Kind("Jet", False)),
        ("sum(Jet_pt)", Kind(None, False)),
        ("any(Jet_tight)", Kind(None, True)),
        ("Jet_pt[0]", Kind(None, False)),
        ("Jet_btag[0]", Kind(None, None)),
        ("Jet_btag & flag", Kind("Jet", True)),  # may be a condition: evaluate sees the dtype
        ("Jet_tight[0]", Kind(None, True)),
        ("(Jet_pt > 3) & flag", Kind("Jet", True)),
        ("where(flag, Jet_pt, 0)", Kind("Jet", False)),
        ("isfinite(MET / HT)", Kind(None, True)),
        ("3", Kind(None, False)),
        ("True", Kind(None, True)),
    ],
)
def test_kinds(source, kind):
    assert check(parse(source, "x"), KINDS) == kind


def test_new_variables_in_dependency_order_and_their_kinds(cols):
    sources = {
        "ratio": "ht / MET",
        "ht": "sum(Jet_pt)",
        "good": "Jet_pt > ht / 10",
        "n": "count(good)",
    }
    definitions = {name: parse(s, f"new_variables.{name}") for name, s in sources.items()}
    names = order(definitions, KINDS)
    assert names == ["ht", "ratio", "good", "n"]
    kinds: dict = dict(KINDS)
    columns = dict(cols)
    for name in names:
        kinds[name] = check(definitions[name], kinds)
        columns[name] = evaluate(definitions[name], columns)
    assert kinds["good"] == Kind("Jet", True)
    ht = ak.to_numpy(ak.sum(cols["Jet_pt"], axis=1))
    np.testing.assert_array_equal(
        columns["n"], ak.to_numpy(ak.sum(cols["Jet_pt"] > ht / 10, axis=1))
    )


def test_require_helpers_accept_what_fits():
    selection = parse("any(Jet_pt > 30) & flag", "selection")
    require_event_level(selection, check(selection, KINDS), condition=True)
    weight = parse("HT * 0.5", "weight")
    require_event_level(weight, check(weight, KINDS))
    for source in ("Jet_pt > 25 & abs(Jet_eta) < 2.4", "HT > 300", "Jet_tight"):
        cut = parse(source, "object_selection.Jet")
        require_object_level(cut, check(cut, KINDS), "Jet")


@pytest.mark.parametrize("source", ["Jet_pt > 25 & abs(Jet_eta) < 2.4", "HT > 300", "flag"])
def test_object_selections_give_one_condition_per_object(cols, source):
    expr = parse(source, "object_selection.Jet")
    require_object_level(expr, check(expr, KINDS), "Jet")
    mask = per_object(evaluate(expr, cols), cols["Jet_pt"])
    expected = run(source, cols)
    if isinstance(expected, np.ndarray):  # per event: every jet of the event
        expected = ak.broadcast_arrays(expected, cols["Jet_pt"])[0]
    assert ak.to_list(mask) == ak.to_list(expected)
    assert ak.to_list(ak.num(cols["Jet_pt"][mask])) == ak.to_list(ak.sum(expected, axis=1))


def test_a_branch_named_like_a_function_is_a_branch():
    expr = parse("count > 3", "selection")
    assert check(expr, {"count": None}) == Kind(None, True)
    np.testing.assert_array_equal(evaluate(expr, {"count": np.array([1, 5])}), [False, True])


# ---------------------------------------------------------------------------------------------
# failure modes: the message names the problem, the place, the expression and the fix


def _expect(where: str, source: str, *parts: str) -> str:
    """A regex for a message that holds all of ``parts``, the place and the expression."""
    return "(?s)" + "".join(f"(?=.*{re.escape(p)})" for p in (f"in {where}", source, *parts))


PARSE_ERRORS = [
    ("sum(Jet_pt))", "new_variables.ht", 12, ("syntax error", "unmatched ')'", "fix the expression in input.yml")),
    ("HT > 300 &", "selection", 11, ("syntax error", "fix the expression")),
    ("é + * 2", "weight", 5, ("syntax error",)),
    ("lambda x: x", "selection", 1, ("a lambda is not allowed", "docs/expressions.md")),
    ("__import__('os')", "selection", 1, ("unknown function '__import__'", "use one of: abs")),
    ("HT.sum()", "new_variables.s", 1, ("a method call '.sum()' is not allowed", "sum(x)")),
    ("(HT + 1).real", "new_variables.s", 2, ("an attribute of a computed value",)),
    ("HT == 'a'", "selection", 7, ("a string constant is not allowed", "remove the quotes")),
    ("é + 'a'", "selection", 5, ("a string constant is not allowed",)),
    ("sum(Jet_pt, axis=1)", "new_variables.s", 13, ("keyword argument 'axis='", "positional")),
    ("sum(*Jet_pt)", "new_variables.s", 5, ("a starred argument",)),
    ("Jet_pt[1:3]", "new_variables.s", 8, ("a slice is not allowed", "Jet_pt[0]")),
    ("Jet_pt[njet]", "new_variables.s", 8, ("not an integer constant", "Jet_pt[0]")),
    ("Jet_pt[0, 1]", "new_variables.s", 8, ("multi-dimensional index",)),
    ("Jet_pt[True]", "new_variables.s", 8, ("not an integer constant",)),
    ("[x for x in Jet_pt]", "new_variables.s", 1, ("a comprehension", "sum, min")),
    ("HT if flag else MET", "new_variables.s", 1, ("a conditional expression", "where(c, a, b)")),
    ("f'{HT}'", "new_variables.s", 1, ("an f-string",)),
    ("(a := 3)", "new_variables.s", 2, ("an assignment ':='",)),
    ("HT @ MET", "new_variables.s", 1, ("the operator '@'", "no bit operations")),
    ("njet << 1", "new_variables.s", 1, ("the operator '<<'",)),
    ("njet in 3", "selection", 1, ("the operator 'in'", "< <= > >= == !=")),
    ("HT > 1j", "selection", 6, ("a complex number",)),
    ("HT > None", "selection", 6, ("None is not allowed",)),
    ("HT > 2 ** 70 + 99999999999999999999", "selection", 16, ("integer beyond 64 bits", "1e20")),
    ("foo(HT)", "new_variables.s", 1, ("unknown function 'foo'", "closest")),
    ("max(HT, MET, njet)", "new_variables.s", 1, ("max() with 3 arguments", "takes 1 or 2")),
    ("np.minimum(HT)", "new_variables.s", 1, ("minimum() with 1 arguments", "takes 2")),
    ("where(flag, HT)", "new_variables.s", 1, ("where() with 2 arguments", "takes 3")),
    ("Jet_pt(0)", "new_variables.s", 1, ("unknown function 'Jet_pt'",)),
    ("sum(Jet_pt)(1)", "new_variables.s", 1, ("calling a computed value",)),
    ("HT > 1 # a note", "selection", 8, ("a comment '#' is not allowed",)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("source", "where", "column", "parts"), PARSE_ERRORS, ids=[p[0] for p in PARSE_ERRORS]
)
def test_parse_refuses_with_a_caret(source, where, column, parts):
    with pytest.raises(ExpressionError, match=_expect(where, source, *parts)) as info:
        parse(source, where)
    error = info.value
    assert (error.where, error.source, error.column) == (where, source, column)
    lines = str(error).splitlines()
    assert f"in {where} at column {column}" in lines[0]
    assert lines[1] == f"  {source}"
    assert lines[2] == "  " + " " * (column - 1) + "^"
    assert isinstance(error, ConfigError)


def test_syntax_error_of_the_brief_puts_the_caret_under_the_extra_parenthesis():
    with pytest.raises(ExpressionError) as info:
        parse("sum(Jet_pt))", "new_variables.ht")
    assert str(info.value) == (
        "syntax error in new_variables.ht at column 12: unmatched ')'\n"
        "  sum(Jet_pt))\n"
        "             ^\n"
        "fix the expression in input.yml"
    )


def test_multi_line_and_indented_expressions_parse(cols):
    assert_same(run("  HT > 300\n  & njet >= 4\n", cols), run("(HT > 300) & (njet >= 4)", cols))
    with pytest.raises(ExpressionError, match="at column 10") as info:
        parse("  HT\n  > ", "selection")
    assert info.value.source == "  HT   > "  # shown on one line, columns kept


def test_empty_expression():
    with pytest.raises(ExpressionError, match=r"empty expression in weight(?s:.*)HT > 300"):
        parse("  ", "weight")


CHECK_ERRORS = [
    ("Jet_ptt > 25", "object_selection.Jet", 1, ("unknown name 'Jet_ptt'", "closest: 'Jet_pt'", "new variable defined in input.yml")),
    ("HT > 300 & Jet.pt > 2", "selection", 12, ("unknown name 'Jet.pt'", "'Jet.PT'")),
    ("abs > 3", "selection", 1, ("the function 'abs' used as a value", "call it: abs(x)")),
    ("np.sqrt + 1", "selection", 1, ("the function 'np.sqrt' used as a value", "sqrt(x)")),
    ("Jet_pt + Muon_pt", "new_variables.x", 1, ("values of two collections combined", "'Jet_pt' is one value per Jet object", "'Muon_pt' one per Muon object", "max(Muon_pt) or Muon_pt[0]")),
    ("any(Jet_pt > Muon_pt)", "selection", 5, ("two collections", "Jet", "Muon")),
    ("sum(HT)", "new_variables.x", 5, ("sum() of a per-event value", "'HT' is one per event", "use HT directly")),
    ("HT[0]", "new_variables.x", 1, ("indexing [0] of a per-event value", "per-object value such as Jet_pt")),
    ("Jet_pt[0][1]", "new_variables.x", 1, ("indexing [1] of a per-event value",)),
    ("max(sum(Jet_pt))", "new_variables.x", 5, ("max() of a per-event value",)),
    ("any(Jet_pt)", "selection", 1, ("any() needs a condition", "any(Jet_pt > 30)")),
    ("HT & flag", "selection", 1, ("'&' needs conditions", "'HT' is a number", "(HT > 0)")),
    ("flag | 3", "selection", 1, ("'|' needs conditions", "'3' is a number")),
    ("~HT > 3", "selection", 1, ("'~' needs conditions", "~(x > 1)")),
    ("not HT", "selection", 1, ("'~' needs conditions",)),
    ("HT > 3 and MET", "selection", 1, ("'&' needs conditions", "'MET' is a number")),
    ("where(HT, 1, 0)", "weight", 1, ("where()'s first argument needs conditions", "'HT' is a number")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("source", "where", "column", "parts"), CHECK_ERRORS, ids=[c[0] for c in CHECK_ERRORS]
)
def test_check_refuses(source, where, column, parts):
    expr = parse(source, where)
    with pytest.raises(ExpressionError, match=_expect(where, source, *parts)) as info:
        check(expr, KINDS)
    assert info.value.column == column


def test_unknown_name_without_any_names():
    with pytest.raises(ExpressionError, match="no names are available"):
        check(parse("HT > 1", "selection"), {})


LEVEL_ERRORS = [
    ("Jet_pt > 30", "selection", ("a condition per object where one per event is needed", "one value per Jet object", "wrap it in any(...) or all(...)")),
    ("Jet_pt * 2", "weight", ("one value per object where one per event is needed", "sum(...), max(...)")),
    ("HT * 2", "selection", ("a number where a condition is needed", "HT > 300")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("source", "where", "parts"), LEVEL_ERRORS, ids=[e[0] for e in LEVEL_ERRORS]
)
def test_require_event_level(source, where, parts):
    expr = parse(source, where)
    kind = check(expr, KINDS)
    with pytest.raises(ExpressionError, match=_expect(where, source, *parts)):
        require_event_level(expr, kind, condition=where == "selection")


@pytest.mark.parametrize(
    ("source", "parts"),
    [
        ("Muon_pt > 10", ("a condition on Muon objects where Jet objects are cut", "use Jet branches", "any(...)")),
        ("Jet_pt * 2", ("a number where a condition is needed", "keeps the Jet objects")),
        ("HT", ("a number where a condition is needed",)),
    ],
)  # fmt: skip
def test_require_object_level(source, parts):
    expr = parse(source, "object_selection.Jet")
    with pytest.raises(ExpressionError, match=_expect("object_selection.Jet", source, *parts)):
        require_object_level(expr, check(expr, KINDS), "Jet")


@pytest.mark.parametrize(
    ("sources", "parts"),
    [
        ({"a": "b + 1", "b": "c * 2", "c": "a - HT"}, ("in new_variables.a", "a -> b -> c -> a", "from branches only")),
        ({"x": "HT", "y": "y * 2"}, ("in new_variables.y", "y -> y")),
        ({"ok": "HT", "p": "q + ok", "q": "p"}, ("p -> q -> p",)),
        ({"HT": "MET * 2"}, ("new variable 'HT' has the name of a branch", "in new_variables.HT", "rename the new variable")),
    ],
)  # fmt: skip
def test_order_refuses_cycles_and_shadowed_branches(sources, parts):
    definitions = {name: parse(s, f"new_variables.{name}") for name, s in sources.items()}
    with pytest.raises(
        ExpressionError, match="(?s)" + "".join(f"(?=.*{re.escape(p)})" for p in parts)
    ):
        order(definitions, KINDS)


def test_evaluate_checks_what_it_can_see(cols):
    """Without the collections evaluate still refuses conditions made of numbers (it sees the
    dtypes) and per-object values whose object counts differ."""
    with pytest.raises(
        ExpressionError, match=_expect("selection", "HT & MET", "'&' needs conditions")
    ):
        evaluate(parse("HT & MET", "selection"), cols)
    source = "Jet_pt + Muon_pt"
    with pytest.raises(
        ExpressionError,
        match=_expect("x", source, "different numbers of objects in", "max(Muon_pt)"),
    ):
        evaluate(parse(source, "x"), cols)
    with pytest.raises(ExpressionError, match=_expect("x", "HT + nope", "unknown name 'nope'")):
        evaluate(parse("HT + nope", "x"), cols)


def test_evaluate_refuses_columns_of_different_lengths(cols):
    with pytest.raises(
        ExpressionError,
        match=_expect("x", "HT + y", "columns of different lengths", "HT: 200, y: 3"),
    ):
        evaluate(parse("HT + y", "x"), {"HT": cols["HT"], "y": np.zeros(3)})
    with pytest.raises(ExpressionError, match="pass n_events"):
        evaluate(parse("1", "weight"), {})


@pytest.mark.parametrize(
    "column", [ak.Array([[[1.0]], [[2.0, 3.0]]]), np.zeros((2, 2, 2)), np.float64(1.0)]
)
def test_evaluate_refuses_columns_that_are_not_one_or_two_dimensional(column):
    with pytest.raises(
        ExpressionError, match=_expect("x", "v + 1", "column 'v' has", "vector of vectors")
    ):
        evaluate(parse("v + 1", "x"), {"v": column})


def test_a_constant_beyond_an_integer_branch(cols):
    with pytest.raises(
        ExpressionError, match=_expect("x", "njet + 10000000000", "out of range", "1e12")
    ):
        run("njet + 10000000000", cols, "x")
    assert_same(run("njet + 1e10", cols), cols["njet"] + 1e10)


def test_deep_nesting_is_an_error_not_a_crash():
    for source in ("(" * 300 + "HT" + ")" * 300, "-" * 300 + "HT", " + ".join(["HT"] * 5000)):
        with pytest.raises(ExpressionError, match=r"(?s)in selection.*(new variables|nested)"):
            parse(source, "selection")
    for terms in (150, 200):  # just under the limit: parse, check and evaluate have the stack
        expr = parse(" + ".join(["HT"] * terms), "x")
        np.testing.assert_allclose(evaluate(expr, {"HT": np.ones(3)}), float(terms))
    deep = "sqrt(" * 190 + "HT" + ")" * 190
    np.testing.assert_allclose(evaluate(parse(deep, "x"), {"HT": np.ones(2)}), 1.0)


def test_the_error_pickles():
    import pickle

    error = ExpressionError("unknown name 'x'", "selection", "fix it", "x > 1", 1, "closest: 'y'")
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error)
    assert again.column == 1


# ---------------------------------------------------------------------------------------------
# properties

_lists = st.lists(
    st.lists(st.floats(-1e3, 1e3, allow_nan=False, width=32), max_size=6), min_size=1, max_size=30
)


@settings(max_examples=60, deadline=None)
@given(rows=_lists, k=st.integers(-8, 8))
def test_reductions_and_indexing_match_the_lists(rows, k):
    columns = {"x": ak.Array(rows)}
    got = {
        s: evaluate(parse(s, "p"), columns)
        for s in ("sum(x)", "count(x)", "max(x)", f"x[{k}]", "count(x > 0)")
    }
    np.testing.assert_allclose(got["sum(x)"], [sum(r) for r in rows], rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(got["count(x)"], [len(r) for r in rows])
    np.testing.assert_array_equal(got["count(x > 0)"], [sum(v > 0 for v in r) for r in rows])
    np.testing.assert_array_equal(got["max(x)"], [max(r) if r else np.nan for r in rows])
    np.testing.assert_array_equal(
        got[f"x[{k}]"], [r[k] if -len(r) <= k < len(r) else np.nan for r in rows]
    )


def _formula(depth: int):
    """(text, reference) pairs: random formulas over a flat and a jagged float column."""
    leaf = st.sampled_from(
        [
            ("a", lambda c: c["a"]),
            ("x", lambda c: c["x"]),
            ("2.5", lambda c: 2.5),
            ("sum(x)", lambda c: ak.to_numpy(ak.sum(c["x"], axis=1))),
            ("count(x)", lambda c: ak.to_numpy(ak.num(c["x"], axis=1))),
        ]
    )
    if depth == 0:
        return leaf
    sub = _formula(depth - 1)
    ops = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.true_divide}
    binary = st.tuples(sub, st.sampled_from(sorted(ops)), sub).map(
        lambda t: (
            f"({t[0][0]} {t[1]} {t[2][0]})",
            lambda c, t=t: ops[t[1]](t[0][1](c), t[2][1](c)),
        )
    )
    unary = st.tuples(st.sampled_from(["abs", "sqrt", "exp", "sin"]), sub).map(
        lambda t: (f"{t[0]}({t[1][0]})", lambda c, t=t: getattr(np, t[0])(t[1][1](c)))
    )
    return st.one_of(leaf, binary, unary)


@settings(max_examples=80, deadline=None)
@given(formula=_formula(3), rows=_lists)
def test_random_formulas_equal_numpy_and_awkward(formula, rows):
    text, reference = formula
    columns = {"x": ak.Array(rows), "a": np.linspace(-2.0, 3.0, len(rows))}
    columns["x"] = ak.values_astype(columns["x"], np.float64)
    with np.errstate(all="ignore"):
        expected = reference(columns)
        if not isinstance(expected, ak.Array) and np.ndim(expected) == 0:
            expected = np.full(len(rows), expected)
    got = evaluate(parse(text, "p"), columns)
    if isinstance(expected, ak.Array):
        assert ak.to_list(ak.num(got)) == ak.to_list(ak.num(expected))
        got, expected = ak.to_numpy(ak.flatten(got)), ak.to_numpy(ak.flatten(expected))
    np.testing.assert_allclose(got, expected, rtol=1e-12, equal_nan=True)


def test_the_module_imports_only_the_standard_library_numpy_awkward_and_exceptions():
    import ast as python_ast
    import sys
    from pathlib import Path

    import rootml.expressions

    tree = python_ast.parse(Path(rootml.expressions.__file__).read_text("utf-8"))
    imported = set()
    for node in python_ast.walk(tree):
        if isinstance(node, python_ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, python_ast.ImportFrom):
            imported.add("." * node.level + (node.module or "").split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"__future__"}
    assert third_party == {"numpy", "awkward", ".exceptions"}

"""Selections and new variables through the data path: specs (statistics after the cuts, the
cut flow), merge (read, derived), preprocess (the rows that pass, staged or from ROOT) and the
serving path (named events and raw rows get object cuts and new variables, never the event
selection)."""

from __future__ import annotations

import awkward as ak
import h5py
import numpy as np
import pytest
import uproot
from rootfiles import write_events

from rootml.config import Settings, load_input
from rootml.derivation import apply, from_json
from rootml.exceptions import ConfigError, DataError, ExpressionError, SchemaValidationError
from rootml.merging import merge
from rootml.preprocessing import preprocess
from rootml.specs import file_specs
from rootml.transform import events_to_raw, raw_rows, scale_rows

IDS = ("run", "event", "luminosityBlock")
DERIVED = {
    "selection": "HT > 100 & any(Jet_pt > 30)",
    "object_selection": {"Jet": "Jet_pt > 25 & abs(Jet_eta) < 2.4"},
    "new_variables": {
        "ht_jets": "sum(Jet_pt)",
        "lead_pt": "Jet_pt[0]",
        "ratio": "where(HT > 0, MET / HT, 0)",
    },
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("derived")
    return [
        write_events(d / "s.root", 3000, 1, signal=True, basket=700),
        write_events(d / "b.root", 2500, 2, basket=700),
    ]


def _specs(files, derived=DERIVED, **kw):
    return [file_specs(str(f), "events", identifiers=IDS, derived=derived, **kw) for f in files]


def _settings(**kw):
    return Settings(tree="events", identifiers=IDS, chunk_size=1000, derived=DERIVED, **kw)


def _by_hand(path):
    """The cuts and new variables written out with awkward, event by event semantics."""
    a = uproot.open(path)["events"].arrays(["HT", "MET", "Jet_pt", "Jet_eta"])
    good = (a.Jet_pt > 25) & (abs(a.Jet_eta) < 2.4)
    jets = a.Jet_pt[good]
    keep = np.asarray((a.HT > 100) & ak.any(jets > 30, axis=1))
    lead = ak.fill_none(ak.firsts(jets), np.nan)
    return keep, jets, np.asarray(ak.sum(jets, axis=1)), np.asarray(lead, dtype=np.float64)


def test_specs_take_their_statistics_after_the_cuts_and_record_the_cut_flow(files):
    keep, jets, ht_jets, lead = _by_hand(files[0])
    (doc,) = _specs(files[:1])
    flow = doc["cutflow"]
    assert flow["events"] == 3000
    assert flow["events passing"] == int(keep.sum())
    assert flow["Jet objects passing"] == int(ak.sum(ak.num(jets)))
    assert flow["Jet objects"] > flow["Jet objects passing"]
    b = doc["branches"]
    assert b["ht_jets"]["kind"] == "flat"
    assert b["ht_jets"]["count"] == int(keep.sum())  # the passing events only
    assert b["ht_jets"]["max"] == pytest.approx(float(ht_jets[keep].max()), rel=1e-6)
    assert b["lead_pt"]["min"] == pytest.approx(float(lead[keep].min()), rel=1e-6)
    # the jets' statistics are those of the jets kept, in the events kept
    assert b["Jet_pt"]["min"] > 25
    counts = np.asarray(ak.num(jets))[keep]
    assert b["Jet_pt"]["multiplicity"]["max"] == int(counts.max())
    assert doc["derived"]["collections"] == {"Jet_pt": "Jet", "Jet_eta": "Jet", "Muon_pt": "Muon"}


def test_preprocess_writes_the_passing_events_with_the_derived_columns(files, tmp_path):
    staged = [tmp_path / "c0", tmp_path / "c1"]
    specs = [
        file_specs(str(f), "events", identifiers=IDS, derived=DERIVED, columns=c)
        for f, c in zip(files, staged, strict=True)
    ]
    layout = merge(specs, _settings(), labels=["1", "0"])
    assert {"ht_jets", "lead_pt", "ratio"} <= set(layout["features"])
    assert "ht_jets" not in layout["read"]  # computed, never read
    assert layout["derived"]["selection"] == DERIVED["selection"]
    from_staged = preprocess(layout, range(len(layout["chunks"])), tmp_path / "a", columns=staged)
    from_root = preprocess(layout, range(len(layout["chunks"])), tmp_path / "b")
    passing = sum(s["cutflow"]["events passing"] for s in specs)
    rows = 0
    for one, two in zip(from_staged, from_root, strict=True):
        with h5py.File(one) as h1, h5py.File(two) as h2:
            np.testing.assert_array_equal(h1["x"][:], h2["x"][:])
            np.testing.assert_array_equal(h1["entry"][:], h2["entry"][:])
            rows += len(h1["x"])
    assert rows == passing
    # each shard row is the scaled raw row of its entry: the same derivation as serving uses
    keep, _, ht_jets, _ = _by_hand(files[0])
    with h5py.File(from_root[0]) as h5:
        x, entry = h5["x"][:], h5["entry"][:]
    assert keep[entry].all()
    assert (np.diff(entry) > 0).all()
    arrays = uproot.open(files[0])["events"].arrays(layout["read"], entry_stop=int(entry[-1]) + 1)
    raw = raw_rows(arrays, layout)
    np.testing.assert_allclose(x, scale_rows(raw[entry], layout), atol=1e-6)
    col = layout["features"].index("ht_jets")
    np.testing.assert_allclose(raw[entry, col], ht_jets[entry], rtol=1e-6)


def test_a_named_event_sends_raw_branches_and_is_scored_whatever_the_selection(files):
    specs = _specs(files)
    layout = merge(specs, _settings(), labels=["1", "0"])
    a = uproot.open(files[0])["events"].arrays(layout["read"], entry_stop=40)
    keep, *_ = _by_hand(files[0])
    rejected = int(np.flatnonzero(~keep[:40])[0])  # an event the selection would drop
    collections = layout["derived"]["collections"]
    events = []
    for i in (0, rejected):
        event = {n: a[n][i].tolist() if n in collections else float(a[n][i]) for n in a.fields}
        events.append(event)
    rows = events_to_raw(events, layout)
    expected = raw_rows(a[[0, rejected]], layout)
    np.testing.assert_array_equal(np.isnan(rows), np.isnan(expected))
    np.testing.assert_allclose(np.nan_to_num(rows), np.nan_to_num(expected), rtol=1e-6)
    assert rows.shape == (2, layout["dim"])


def test_a_selection_that_keeps_nothing_names_the_file_and_the_cut_flow(files):
    derived = {"selection": "HT < 0"}
    with pytest.raises(
        DataError, match=r"keeps no event(.|\n)*events: 3000(.|\n)*in file .*s\.root"
    ):
        _specs(files[:1], derived=derived)


@pytest.mark.parametrize(
    ("derived", "match"),
    [
        ({"selection": "Jet_ptt > 30"}, r"Jet_ptt(.|\n)*Jet_pt(.|\n)*in file .*s\.root"),
        ({"selection": "Jet_pt > 30"}, r"any\(\.\.\.\) or all\(\.\.\.\)"),
        ({"object_selection": {"Jets": "Jet_pt > 25"}}, r"no collection 'Jets'(.|\n)*Jet, Muon"),
        ({"new_variables": {"HT": "MET * 2"}}, r"name of a branch"),
        ({"new_variables": {"x": "sum(Jet_pt"}}, r"syntax error in new_variables\.x"),
    ],
    ids=["unknown-branch", "collection-without-any", "unknown-collection", "shadows", "syntax"],
)
def test_bad_expressions_are_refused_before_any_output(files, tmp_path, derived, match):
    with pytest.raises(ExpressionError, match=match):
        _specs(files[:1], derived=derived, columns=tmp_path / "cols")
    assert not (tmp_path / "cols").exists()


def test_specs_taken_with_different_selections_do_not_merge(files):
    one = _specs(files[:1])
    two = _specs(files[1:], derived={**DERIVED, "selection": "HT > 200"})
    with pytest.raises(ConfigError, match="different selections or new variables"):
        merge([*one, *two], _settings(), labels=["1", "0"])


def test_branches_read_only_by_the_expressions_are_not_features(files):
    specs = [
        file_specs(str(f), "events", selected=["HT", "Jet_pt"], identifiers=IDS, derived=DERIVED)
        for f in files
    ]
    layout = merge(specs, _settings(selected=("HT", "Jet_pt")), labels=["1", "0"])
    branches = {c["branch"] for c in layout["inputs"]}
    assert branches == {"HT", "Jet_pt", "ht_jets", "lead_pt", "ratio"}
    assert {"MET", "Jet_eta"} <= set(layout["read"])  # read for the cuts and ratio


def test_input_yml_declares_them(tmp_path):
    (tmp_path / "input.yml").write_text(
        "files: [a.root]\nlabels: [1]\n"
        "selection: 'njet >= 2'\n"
        "object_selection: {Jet: 'Jet_pt > 25'}\n"
        "new_variables: {ht: 'sum(Jet_pt)'}\n"
    )
    _, settings = load_input(tmp_path / "input.yml")
    assert settings.derived == {
        "selection": "njet >= 2",
        "object_selection": {"Jet": "Jet_pt > 25"},
        "new_variables": {"ht": "sum(Jet_pt)"},
    }
    (tmp_path / "bad.yml").write_text("files: [a.root]\nlabels: [1]\nselection: 3\n")
    with pytest.raises(SchemaValidationError, match="selection"):
        load_input(tmp_path / "bad.yml")


def test_apply_leaves_the_events_alone_without_selecting():
    arrays = ak.Array({"HT": np.array([50.0, 500.0]), "Jet_pt": [[10.0, 40.0], [60.0]]})
    d = from_json(
        {
            "selection": "HT > 100",
            "object_selection": {"Jet": "Jet_pt > 25"},
            "new_variables": {"n": "count(Jet_pt)"},
        }
    )
    scored = apply(d, arrays, {"Jet_pt": "Jet"}, select=False)
    assert scored.keep is None
    assert scored.arrays()["Jet_pt"].tolist() == [[40.0], [60.0]]
    assert scored.arrays()["n"].tolist() == [1, 1]
    selected = apply(d, arrays, {"Jet_pt": "Jet"})
    assert selected.keep.tolist() == [False, True]
    assert selected.cutflow == {
        "events": 2, "Jet objects": 3, "Jet objects passing": 2, "events passing": 1,
    }  # fmt: skip


def test_the_layout_and_the_report_carry_each_files_cut_flow(files):
    from rootml.scoring import _cutflow_rows

    specs = _specs(files)
    layout = merge(specs, _settings(), labels=["1", "0"])
    assert [f["cutflow"] for f in layout["files"]] == [s["cutflow"] for s in specs]
    rows = _cutflow_rows(layout)
    assert rows["selection"] == DERIVED["selection"]
    assert rows["new variable lead_pt"] == "Jet_pt[0]"
    flow = specs[0]["cutflow"]
    assert rows["cut flow s.root"] == (
        f"events {flow['events']:,} -> {flow['events passing']:,}; "
        f"Jet objects {flow['Jet objects']:,} -> {flow['Jet objects passing']:,}; "
        f"HT > 100: {flow['passing HT > 100']:,} -> "
        f"any(Jet_pt > 30): {flow['passing any(Jet_pt > 30)']:,}"
    )
    assert flow["passing any(Jet_pt > 30)"] == flow["events passing"]
    assert flow["events"] >= flow["passing HT > 100"] >= flow["events passing"]


def test_a_branch_of_another_multiplicity_under_the_same_prefix_keeps_its_objects():
    arrays = ak.Array({"Jet_pt": [[10.0, 40.0], [60.0]], "Jet_hits": [[1, 2, 3], []]})
    d = from_json({"object_selection": {"Jet": "Jet_pt > 25"}})
    out = apply(d, arrays, {"Jet_pt": "Jet", "Jet_hits": "Jet"}).arrays()
    assert out["Jet_pt"].tolist() == [[40.0], [60.0]]
    assert out["Jet_hits"].tolist() == [[1, 2, 3], []]


def test_the_bundles_params_name_the_derived_columns(files):
    from rootml.bundle import tfaas_params

    layout = merge(_specs(files), _settings(), labels=["1", "0"])
    params = tfaas_params(layout, "m", "")
    assert params["new_variables"] == DERIVED["new_variables"]
    assert params["derived_features"] == ["ht_jets", "lead_pt", "ratio"]
    assert set(params["derived_features"]) <= set(params["features"])


def test_the_cut_flow_counts_each_term_of_the_selection_in_order():
    arrays = ak.Array(
        {
            "HT": np.array([50.0, 500.0, 700.0, 800.0]),
            "nJet": np.array([1, 3, 4, 5]),
            "Jet_pt": [[10.0], [60.0, 20.0, 5.0], [1.0, 2.0, 3.0, 4.0], [30.0, 40, 50, 60, 70]],
        }
    )
    d = from_json({"selection": "nJet >= 3 & (HT > 600) and any(Jet_pt > 25)"})
    done = apply(d, arrays, {"Jet_pt": "Jet"})
    assert done.keep.tolist() == [False, False, False, True]
    assert done.cutflow == {
        "events": 4,
        "passing nJet >= 3": 3,
        "passing HT > 600": 2,
        "passing any(Jet_pt > 25)": 1,
        "events passing": 1,
    }
    one = apply(from_json({"selection": "HT > 600 | nJet > 4"}), arrays, {"Jet_pt": "Jet"})
    assert one.cutflow == {"events": 4, "events passing": 2}  # not a conjunction: one cut

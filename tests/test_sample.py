"""Tests of rootml.sample: the seeded signal/background ROOT files and the inputs folder."""

from __future__ import annotations

import json
import logging
import sys
import types
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from rootml import sample
from rootml.exceptions import ConfigError
from rootml.sample import SampleResult, make_sample

IDENTIFIERS = ("run", "event", "luminosityBlock")
COLLECTIONS = ("Jet", "Muon", "Electron")


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> SampleResult:
    """3000 events in baskets of 1000 (2 baskets per file), seed 7."""
    return make_sample(tmp_path_factory.mktemp("small"), 3000, seed=7, basket_events=1000)


def read(path: Path, tree: str = "events") -> ak.Array:
    with uproot.open(path) as file:
        return file[tree].arrays()


def branch_types(path: Path, tree: str = "events") -> dict[str, str]:
    """Branch name -> awkward type string, e.g. 'float32' or 'var * float32'."""
    with uproot.open(path) as file:
        return {
            branch.name: str(branch.interpretation.awkward_form(None).type)
            for branch in file[tree].branches
        }


def test_writes_two_files_and_the_inputs_folder(small):
    signal, background = small.files
    assert (signal.name, background.name) == ("signal.root", "background.root")
    assert small.inputs == signal.parent / "inputs"
    assert small.entries == (1500, 1500)
    for path, entries in zip(small.files, small.entries, strict=True):
        with uproot.open(path) as file:
            assert file.classnames() == {"events;1": "TTree"}
            assert file["events"].num_entries == entries
    # temporary names are gone once the files are complete
    assert sorted(p.name for p in signal.parent.iterdir()) == [
        "background.root",
        "inputs",
        "signal.root",
    ]
    assert sorted(p.name for p in small.inputs.iterdir()) == [
        "analysis.yml",
        "files.txt",
        "input.yml",
        "labels.txt",
        "model.py",
        "params.json",
    ]


def test_same_seed_same_arrays_other_seed_other_arrays(small, tmp_path):
    again = make_sample(tmp_path / "again", 3000, seed=7, basket_events=1000)
    other = make_sample(tmp_path / "other", 3000, seed=8, basket_events=1000)
    for first, second, third in zip(small.files, again.files, other.files, strict=True):
        reference = read(first)
        assert ak.array_equal(reference, read(second))
        different = read(third)
        assert ak.array_equal(reference[IDENTIFIERS[0]], different[IDENTIFIERS[0]])
        assert not ak.array_equal(reference["HT"], different["HT"])
        assert not ak.array_equal(reference["Jet_pt"], different["Jet_pt"])
    # signal and background are different streams even for one seed
    assert not ak.array_equal(read(small.files[0])["HT"], read(small.files[1])["HT"])


def test_branch_inventory_and_types(small):
    types_ = branch_types(small.files[0])
    assert types_["run"] == "uint32"
    assert types_["luminosityBlock"] == "uint32"
    assert types_["event"] == "uint64"
    assert types_["HLT_IsoMu24"] == "bool"
    assert types_["PV_npvs"] == "int32"
    flat_floats = [n for n, t in types_.items() if t == "float32"]
    assert len(flat_floats) >= 10, flat_floats
    assert {"HT", "MET_pt", "MET_phi", "MET_sumEt", "PV_z", "rho", "MT"} <= set(flat_floats)
    for name in COLLECTIONS:
        assert types_[f"n{name}"] == "int32"
        assert types_[f"{name}_pt"] == "var * float32"
        assert types_[f"{name}_eta"] == "var * float32"
        assert types_[f"{name}_phi"] == "var * float32"
    assert types_["Jet_mass"] == types_["Jet_btagDeepB"] == "var * float32"
    assert types_["Muon_charge"] == "var * int32"
    assert types_["Muon_pfRelIso"] == "var * float32"
    # both files have the same branches, in the same order
    assert branch_types(small.files[1]) == types_


@pytest.mark.parametrize("which", [0, 1])
def test_events_are_physically_coherent(small, which):
    events = read(small.files[which])
    # identifiers: a few runs, lumi blocks from 1, event numbers unique
    assert 1 < len(np.unique(events["run"])) <= 4
    assert ak.min(events["luminosityBlock"]) == 1
    assert len(np.unique(events["event"])) == len(events)
    # counters match the collections; jets are ordered by pt, as in NanoAOD
    for name in COLLECTIONS:
        assert ak.all(events[f"n{name}"] == ak.num(events[f"{name}_pt"]))
    assert ak.all(events["Jet_pt"][:, 1:] <= events["Jet_pt"][:, :-1])
    assert ak.all(events["Muon_pt"][:, 1:] <= events["Muon_pt"][:, :-1])
    assert ak.min(events["Jet_pt"]) >= 20
    assert ak.all(abs(events["Jet_eta"]) < 4.7)
    assert set(np.unique(ak.flatten(events["Muon_charge"]))) == {-1, 1}
    # HT is the scalar sum of the jets' pt
    np.testing.assert_allclose(events["HT"], ak.sum(events["Jet_pt"], axis=1), rtol=1e-5)
    assert ak.all(events["MET_sumEt"] >= events["HT"])
    assert ak.all((events["MET_phi"] >= -np.pi) & (events["MET_phi"] <= np.pi))
    # no NaN or inf anywhere (the sample input.yml says nan_policy: error)
    for field in events.fields:
        values = ak.flatten(events[field], axis=None)
        if values.ndim and np.issubdtype(ak.to_numpy(values).dtype, np.floating):
            assert np.all(np.isfinite(ak.to_numpy(values))), field


def test_multiplicities_and_kinematics_differ_between_classes(small):
    signal, background = (read(path) for path in small.files)
    assert ak.mean(signal["nJet"]) > ak.mean(background["nJet"]) + 1
    b_tags = [ak.mean(ak.sum(e["Jet_btagDeepB"] > 0.5, axis=1)) for e in (signal, background)]
    assert b_tags[0] > 1.5 * b_tags[1]
    assert np.median(signal["HT"]) > 1.2 * np.median(background["HT"])
    assert np.median(signal["MET_pt"]) > np.median(background["MET_pt"])
    # ... but they overlap: plenty of background events look like typical signal
    assert np.mean(background["nJet"] >= np.median(signal["nJet"])) > 0.15
    for events in (signal, background):
        # a long tail of busy events: the largest multiplicity is far above the 99th percentile
        assert ak.max(events["nJet"]) > np.percentile(events["nJet"], 99) + 3
        assert ak.min(events["nJet"]) == 0


def test_inputs_folder_parses(small):
    inputs = small.inputs
    lines = (inputs / "files.txt").read_text().splitlines()
    assert lines[0].startswith("#")
    assert lines[1:] == ["../signal.root", "../background.root"]
    assert [(inputs / line).resolve() for line in lines[1:]] == [p.resolve() for p in small.files]
    assert (inputs / "labels.txt").read_text().split() == ["1", "0"]

    params = json.loads((inputs / "params.json").read_text())
    assert params == {
        "nevts": -1,
        "shuffle": True,
        "chunk_size": 10000,
        "epochs": 5,
        "batch_size": 256,
        "identifier": ["run", "event", "luminosityBlock"],
        "branch": "events",
        "selected_branches": [],
        "exclude_branches": [],
        "redirector": "root://cms-xrd-global.cern.ch",
        "verbose": 1,
    }

    text = (inputs / "input.yml").read_text()
    assert text.startswith("# rootml workflow input (validated against rootml's input schema)\n")
    config = yaml.safe_load(text)
    assert config["files"] == "files.txt"
    assert config["labels"] == "labels.txt"
    assert config["tree"] == "events"
    assert config["model"] == "model.py"
    assert config["seed"] == 7
    assert config["data"] == {
        "nevts": -1,
        "chunk_size": 10000,
        "redirector": None,
        "split": {"val": 0.16, "test": 0.2},
    }
    assert config["features"]["identifiers"] == list(IDENTIFIERS)
    assert config["features"]["nan_policy"] == "error"
    assert config["training"] == {"epochs": 5, "batch_size": 256, "shuffle": True}
    assert config["publish"] == {"url": None, "name": "rootml_sample"}


class FakeKeras(types.ModuleType):
    """Just enough of keras to record the model that model.py builds."""

    def __init__(self):
        super().__init__("keras")
        self.calls: list[tuple] = []
        self.layers = types.SimpleNamespace(Dense=self._dense)

    def Input(self, shape):
        self.calls.append(("Input", shape))
        return "inputs"

    def _dense(self, units, activation):
        self.calls.append(("Dense", units, activation))
        return lambda previous: f"dense({previous})"

    def Model(self, inputs, outputs):
        self.calls.append(("Model", inputs, outputs))
        fake = self

        class Compiled:
            def compile(self, **kwargs):
                fake.calls.append(("compile", kwargs))

        return Compiled()


def test_model_py_defines_model_and_imports_keras_lazily(small, monkeypatch):
    source = (small.inputs / "model.py").read_text()
    code = compile(source, "model.py", "exec")
    namespace: dict = {}
    exec(code, namespace)  # noqa: S102  top level must not need TensorFlow or Keras
    assert callable(namespace["model"])
    assert "tensorflow" not in source.split("def model", 1)[0]

    fake = FakeKeras()
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # makes `from tensorflow ...` fail
    monkeypatch.setitem(sys.modules, "keras", fake)
    namespace["model"](23)
    assert fake.calls == [
        ("Input", (23,)),
        ("Dense", 16, "relu"),
        ("Dense", 1, "sigmoid"),
        ("Model", "inputs", "dense(dense(inputs))"),
        (
            "compile",
            {"optimizer": "adam", "loss": "binary_crossentropy", "metrics": ["accuracy"]},
        ),
    ]


def test_baskets_are_bounded(tmp_path):
    result = make_sample(tmp_path, 2500, seed=3, basket_events=500)
    for path in result.files:
        with uproot.open(path) as file:
            ttree = file["events"]
            assert ttree.num_entries == 1250
            for name in ("HT", "event", "nJet", "Jet_pt", "Muon_charge"):
                assert ttree[name].num_baskets == 3, name
                assert max(np.diff(ttree[name].entry_offsets)) <= 500, name
            assert list(ttree["HT"].entry_offsets) == [0, 500, 1000, 1250]


@pytest.mark.parametrize(
    ("kwargs", "entries"),
    [
        ({"events": 2}, (1, 1)),
        ({"events": 10, "signal_fraction": 0.3}, (3, 7)),
        ({"events": 10, "signal_fraction": 0.01}, (1, 9)),
        ({"events": 10, "signal_fraction": 0.99}, (9, 1)),
        ({"events": np.int64(7), "signal_fraction": np.float64(0.5)}, (4, 3)),
    ],
)
def test_events_are_split_by_signal_fraction(tmp_path, kwargs, entries):
    result = make_sample(tmp_path, **kwargs)
    assert result.entries == entries
    for path, n in zip(result.files, entries, strict=True):
        with uproot.open(path) as file:
            assert file["events"].num_entries == n


def test_tree_name_reaches_every_file(tmp_path):
    result = make_sample(tmp_path / "nested" / "out", 20, seed=2, tree="Events")
    for path in result.files:
        with uproot.open(path) as file:
            assert file.classnames() == {"Events;1": "TTree"}
    assert json.loads((result.inputs / "params.json").read_text())["branch"] == "Events"
    config = yaml.safe_load((result.inputs / "input.yml").read_text())
    assert (config["tree"], config["seed"]) == ("Events", 2)
    # a name YAML would misread is quoted
    odd = make_sample(tmp_path / "odd", 4, tree="true")
    assert yaml.safe_load((odd.inputs / "input.yml").read_text())["tree"] == "true"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"events": 1}, r"events must be an integer of at least 2.*got 1"),
        ({"events": 0}, r"events must be an integer of at least 2.*got 0"),
        ({"events": 2.5}, r"events must be an integer of at least 2.*got 2\.5"),
        ({"events": True}, r"events must be an integer.*got True"),
        ({"signal_fraction": 0.0}, r"signal_fraction must be .* between 0 and 1, got 0\.0"),
        ({"signal_fraction": 1}, r"signal_fraction must be .* between 0 and 1, got 1"),
        ({"signal_fraction": float("nan")}, r"signal_fraction .* got nan"),
        ({"signal_fraction": "0.5"}, r"signal_fraction .* got '0\.5'"),
        ({"seed": -1}, r"seed must be a non-negative integer, got -1"),
        ({"basket_events": 0}, r"basket_events must be a positive integer, got 0"),
        ({"tree": ""}, r"tree must be a non-empty name .* got ''"),
        ({"tree": "dir/events"}, r"tree must be .* without '/' .* got 'dir/events'"),
    ],
)
def test_bad_arguments_raise_before_writing(tmp_path, kwargs, match):
    arguments = {"events": 100, **kwargs}
    with pytest.raises(ConfigError, match=match):
        make_sample(tmp_path / "out", **arguments)
    assert not (tmp_path / "out").exists()


def test_output_path_that_is_a_file(tmp_path):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    with pytest.raises(ConfigError, match=r"exists and is not a folder: .*taken"):
        make_sample(target, 10)


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    generate = sample.generate_events
    calls = []

    def fail_on_second_block(*args):
        calls.append(args[1])
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return generate(*args)

    monkeypatch.setattr(sample, "generate_events", fail_on_second_block)
    with pytest.raises(RuntimeError, match="disk full"):
        make_sample(tmp_path, 100, basket_events=20)
    assert calls == [0, 20]
    assert list(tmp_path.iterdir()) == []


def test_logs_one_info_line(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="rootml.sample"):
        make_sample(tmp_path, 50, seed=4)
    records = [r for r in caplog.records if r.name == "rootml.sample"]
    assert len(records) == 1
    message = records[0].getMessage()
    assert "50 events (25 signal, 25 background, seed 4)" in message
    assert "signal.root" in message
    assert "background.root" in message
    assert " bytes in " in message


@settings(max_examples=25, deadline=None)
@given(
    start=st.integers(0, 5000),
    n=st.integers(1, 300),
    extra=st.integers(0, 5000),
    seed=st.integers(0, 2**32),
    signal=st.booleans(),
)
def test_generate_events_shapes(start, n, extra, seed, signal):
    process = sample.SIGNAL if signal else sample.BACKGROUND
    total = start + n + extra
    block = sample.generate_events(process, start, n, total, np.random.default_rng(seed))
    for name, values in block.items():
        assert len(values) == n, name
    assert np.all(np.diff(block["event"].astype(np.int64)) > 0)
    assert set(np.unique(block["run"])) <= set(sample.RUNS)
    assert np.all(np.diff(block["run"].astype(np.int64)) >= 0)
    assert np.all(block["luminosityBlock"] >= 1)
    for name in COLLECTIONS:
        assert str(block[name].type.content).startswith("var * {pt: float32")
    np.testing.assert_allclose(block["HT"], ak.sum(block["Jet"].pt, axis=1), rtol=1e-5)


def test_identifiers_do_not_depend_on_basket_size():
    whole = sample.generate_events(sample.SIGNAL, 0, 1000, 1000, np.random.default_rng(0))
    parts = [
        sample.generate_events(sample.SIGNAL, lo, 250, 1000, np.random.default_rng(lo))
        for lo in range(0, 1000, 250)
    ]
    for name in ("run", "luminosityBlock"):
        np.testing.assert_array_equal(whole[name], np.concatenate([p[name] for p in parts]))
    assert list(np.unique(whole["run"], return_counts=True)[1]) == [250, 250, 250, 250]


def feature_matrix(path: Path) -> np.ndarray:
    """Flat floats and counts, plus the first 4 jets' pt and eta (0 where missing)."""
    events = read(path)
    flat = [
        name
        for name in events.fields
        if name not in IDENTIFIERS and not name.startswith(tuple(f"{c}_" for c in COLLECTIONS))
    ]
    columns = [ak.to_numpy(events[name]).astype(np.float64) for name in flat]
    for name in ("Jet_pt", "Jet_eta"):
        padded = ak.fill_none(ak.pad_none(events[name], 4, clip=True), 0.0)
        columns.extend(ak.to_numpy(padded[:, i]).astype(np.float64) for i in range(4))
    return np.column_stack(columns)


@pytest.mark.slow  # about 2-4 s on two cores
def test_a_small_classifier_separates_signal_from_background_imperfectly(tmp_path):
    ensemble = pytest.importorskip("sklearn.ensemble")
    metrics = pytest.importorskip("sklearn.metrics")
    result = make_sample(tmp_path, 20_000, seed=11)
    signal, background = (feature_matrix(path) for path in result.files)
    x = np.vstack([signal, background])
    y = np.concatenate([np.ones(len(signal)), np.zeros(len(background))])
    test = np.random.default_rng(0).random(len(y)) < 0.3
    clf = ensemble.HistGradientBoostingClassifier(random_state=0)
    clf.fit(x[~test], y[~test])
    auc = metrics.roc_auc_score(y[test], clf.predict_proba(x[test])[:, 1])
    assert 0.7 < auc < 0.95, auc
    # no single feature gives it away
    for column in x.T:
        single = metrics.roc_auc_score(y, column)
        assert max(single, 1 - single) < 0.8


def test_the_analysis_input_selects_derives_and_weights(small):
    """analysis.yml: the sample as an analysis trains it; its expressions hold on the files."""
    from rootml.config import load_input
    from rootml.specs import file_specs

    inputs, settings = load_input(small.inputs / "analysis.yml")
    n_signal, n_background = (uproot.open(f)["events"].num_entries for f in small.files)
    assert inputs.weights == pytest.approx((0.9 / n_signal, 800.0 / n_background))
    assert set(settings.derived) == {"selection", "object_selection", "new_variables"}
    doc = file_specs(
        str(small.files[0]), "events", identifiers=IDENTIFIERS, derived=settings.derived
    )
    flow = doc["cutflow"]
    assert 0 < flow["events passing"] < flow["events"]
    assert {"ht_jets", "lead_jet_pt", "met_over_ht"} <= set(doc["branches"])

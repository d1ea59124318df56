from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot
from hypothesis import given, settings
from hypothesis import strategies as st
from rootfiles import event_arrays, write_events, write_rntuple

from rootml.exceptions import BranchError, DataError
from rootml.multiplicity import histogram_quantile, multiplicity_summary
from rootml.schemas import validate
from rootml.specs import SAMPLE_SIZE, Moments, file_specs

IDS = ("run", "event", "luminosityBlock")


@pytest.fixture(scope="module")
def sample_file(tmp_path_factory):
    return write_events(
        tmp_path_factory.mktemp("specs") / "sig.root", 3000, seed=3, signal=True, basket=700
    )


def test_flat_and_jagged_statistics_match_numpy(sample_file):
    doc = file_specs(str(sample_file), "events", identifiers=IDS, step=512)
    truth = uproot.open(sample_file)["events"].arrays()
    met = truth["MET"].to_numpy().astype(np.float64)
    b = doc["branches"]["MET"]
    assert b["kind"] == "flat"
    assert b["dtype"] == "float32"
    assert b["entries"] == 3000
    assert b["min"] == pytest.approx(met.min())
    assert b["max"] == pytest.approx(met.max())
    assert b["mean"] == pytest.approx(met.mean(), rel=1e-12)
    assert b["std"] == pytest.approx(met.std(), rel=1e-9)
    jet = doc["branches"]["Jet_pt"]
    counts = ak.num(truth["Jet_pt"]).to_numpy()
    assert jet["kind"] == "jagged"
    assert jet["collection"] == "Jet"
    assert jet["multiplicity"]["max"] == counts.max()
    assert jet["multiplicity"]["histogram"] == np.bincount(counts).tolist()
    assert jet["multiplicity"]["p50"] == int(np.quantile(counts, 0.5, method="inverted_cdf"))
    assert jet["count"] == counts.sum()
    assert doc["branches"]["nPV"]["unique"] is None or len(doc["branches"]["nPV"]["unique"]) <= 64
    assert doc["branches"]["trigger"]["unique"] == [0, 1]


def test_identifiers_excluded_and_only_selected_read(sample_file):
    doc = file_specs(str(sample_file), "events", identifiers=IDS)
    assert not set(IDS) & set(doc["branches"])
    assert doc["identifiers"] == list(IDS)
    doc = file_specs(str(sample_file), "events", selected=["HT", "Jet_eta"], identifiers=IDS)
    assert list(doc["branches"]) == ["HT", "Jet_eta"]
    doc = file_specs(str(sample_file), "events", exclude=["Muon_pt", "nMuon"], identifiers=IDS)
    assert "Muon_pt" not in doc["branches"]
    assert "HT" in doc["branches"]


def test_result_independent_of_step(sample_file):
    a = file_specs(str(sample_file), "events", identifiers=IDS, step=97)
    b = file_specs(str(sample_file), "events", identifiers=IDS, step=100_000)
    for name, ba in a["branches"].items():
        bb = b["branches"][name]
        for key in ("min", "max", "count", "nan", "inf"):
            assert ba[key] == bb[key], (name, key)
        assert ba["mean"] == pytest.approx(bb["mean"], rel=1e-12)
        assert ba["std"] == pytest.approx(bb["std"], rel=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.floats(-1e6, 1e6), min_size=0, max_size=30), min_size=1, max_size=6))
def test_moments_merge_equals_one_pass(blocks):
    m = Moments()
    for block in blocks:
        m.add(np.asarray(block, dtype=np.float64))
    everything = np.concatenate([np.asarray(b, dtype=np.float64) for b in blocks])
    out = m.to_json()
    assert out["count"] == everything.size
    if everything.size:
        assert out["mean"] == pytest.approx(everything.mean(), rel=1e-9, abs=1e-6)
        assert out["std"] == pytest.approx(everything.std(), rel=1e-6, abs=1e-5)
        assert out["min"] == everything.min()
        assert out["max"] == everything.max()
    else:
        assert out["mean"] is None


def test_value_sample_quantiles_are_exact_for_few_values_and_bounded_for_many():
    rng = np.random.default_rng(3)
    few = rng.normal(size=5000)
    m = Moments()
    for block in np.array_split(few, 7):
        m.add(block)
    q = m.to_json()["quantiles"]
    assert q["sampled"] == few.size
    assert q["values"] == pytest.approx(np.quantile(few.astype(np.float32), q["probs"]), abs=1e-6)
    many = rng.exponential(size=2_000_000)
    runs = []
    for _ in range(2):
        m = Moments()
        for block in np.array_split(many, 23):
            m.add(block)
        runs.append(m.to_json()["quantiles"])
    assert runs[0] == runs[1]  # the same stream gives the same sample
    q = runs[0]
    assert SAMPLE_SIZE <= q["sampled"] <= 2 * SAMPLE_SIZE
    assert (q["values"][0], q["values"][-1]) == (many.min(), many.max())
    ordered = np.sort(many)
    for p, v in zip(q["probs"][1:-1], q["values"][1:-1], strict=True):
        got = np.searchsorted(ordered, v) / many.size
        assert got == pytest.approx(p, abs=4 * math.sqrt(p * (1 - p) / SAMPLE_SIZE) + 1e-4), p


def test_nan_and_inf_are_counted_not_averaged(tmp_path):
    arrays = event_arrays(100, 1)
    met = arrays["MET"].copy()
    met[:3] = np.nan
    met[3] = np.inf
    jet = arrays["Jet"]
    eta = ak.to_numpy(ak.flatten(jet.eta)).copy()
    eta[0] = -np.inf
    arrays["Jet"] = ak.zip({"pt": jet.pt, "eta": ak.unflatten(eta, ak.num(jet))})
    path = tmp_path / "nan.root"
    from rootfiles import write_tree

    write_tree(path, {**arrays, "MET": met})
    doc = file_specs(str(path), "events", identifiers=IDS)
    b = doc["branches"]["MET"]
    assert (b["nan"], b["inf"], b["count"]) == (3, 1, 96)
    assert np.isfinite(b["mean"])
    assert doc["branches"]["Jet_eta"]["inf"] == 1


def test_histogram_quantiles():
    hist = np.array([10, 80, 9, 0, 1])  # 100 events
    assert histogram_quantile(hist, 0.5) == 1
    assert histogram_quantile(hist, 0.99) == 2
    assert histogram_quantile(hist, 1.0) == 4
    summary = multiplicity_summary(hist)
    assert summary["max"] == 4
    assert summary["mean"] == pytest.approx((80 + 18 + 4) / 100)


def test_rntuple_specs(tmp_path):
    path = write_rntuple(tmp_path / "nt.root", 500, seed=2)
    doc = file_specs(str(path), "ntuple", identifiers=IDS)
    assert doc["format"] == "RNTuple"
    assert doc["branches"]["Jet.pt"]["kind"] == "jagged"
    assert doc["branches"]["Jet.pt"]["collection"] == "Jet"
    assert doc["branches"]["MET"]["kind"] == "flat"
    validate(doc, "file-specs")


def test_selected_branch_missing_names_file_and_closest(sample_file):
    with pytest.raises(
        BranchError, match=r"'Jet_ptt'.*closest: 'Jet_pt'(.|\n)*in file .*sig\.root"
    ):
        file_specs(str(sample_file), "events", selected=["HT", "Jet_ptt"])


def test_unsupported_branch_skipped_with_warning_or_error_when_selected(tmp_path, caplog):
    path = tmp_path / "str.root"
    arrays = event_arrays(50, 0)
    with uproot.recreate(path) as f:
        f["events"] = {
            **{k: v for k, v in arrays.items() if k in ("MET", "HT")},
            "label_text": ak.Array(["sig"] * 50),
        }
    with caplog.at_level(logging.WARNING):
        doc = file_specs(str(path), "events")
    assert doc["branches"]["label_text"] == {
        "kind": "unsupported",
        "reason": "strings cannot be features",
    }
    assert "skipped 1 branch(es)" in caplog.text
    assert re.search(r"label_text +\S+ +strings cannot be features", caplog.text)  # the table
    with pytest.raises(
        BranchError, match=r"'label_text' cannot be used: strings(.|\n)*exclude_branches"
    ):
        file_specs(str(path), "events", selected=["MET", "label_text"])


def test_empty_tree_is_an_error(tmp_path):
    path = write_events(tmp_path / "empty.root", 0)
    with pytest.raises(DataError, match=r"no entries(.|\n)*in file .*empty\.root"):
        file_specs(str(path), "events")


def test_everything_excluded_is_an_error(sample_file):
    with pytest.raises(
        BranchError, match=r"--branches/--exclude\) leave no branch(.|\n)*can be selected: .*MET"
    ):
        file_specs(str(sample_file), "events", selected=["run"], identifiers=IDS)


DATA = Path(__file__).parent / "data"  # files written by ROOT (see data/README.md)


def test_split_collections_give_leaf_features_and_their_counts_only_when_asked(caplog):
    path = str(DATA / "uproot-issue213.root")
    with caplog.at_level(logging.WARNING, logger="rootml"):
        doc = file_specs(path, "T", identifiers=())
    branches = doc["branches"]
    assert branches["fMCHits.fEneDep"]["kind"] == "jagged"
    assert branches["fMCHits.fEneDep"]["collection"] == "fMCHits"
    assert branches["fMCHits.fEneDep"]["count"] > 0
    count = branches["eventPack.fMCHits"]
    assert count["kind"] == "unsupported"
    assert "object count" in count["reason"]
    assert branches["fMCHits.fPosition"] == {
        "kind": "unsupported",
        "reason": "jagged array of a record/struct; select its leaf fields",
        "type": "TVector3[]",
    }
    # one table for everything skipped, not a line per branch
    tables = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(tables) == 1
    assert "eventPack.fGenInfo" in tables[0]

    # a leaf by its underscore alias, the collection's leaves by a pattern, the count by name
    doc = file_specs(
        path, "T", identifiers=(), selected=["fMCHits_fTime", "fMCHits.fEvt*", "eventPack.fMCHits"]
    )
    assert list(doc["branches"]) == ["fMCHits.fTime", "fMCHits.fEvtID", "eventPack.fMCHits"]
    assert doc["branches"]["eventPack.fMCHits"]["kind"] == "flat"


def test_a_tree_of_unusable_branches_says_what_was_skipped_and_what_can_be_selected(tmp_path):
    path = str(DATA / "uproot-small-evnt-tree-fullsplit.root")
    with pytest.raises(BranchError) as err:
        file_specs(
            path,
            "tree",
            identifiers=(),
            exclude=["evt.[!BES]*", "evt.S[!t]*", "evt.StlVec[!S]*", "P3.*"],
        )
    text = str(err.value)
    assert "leave no branch" in text
    assert re.search(r"evt\.Str +TString +strings cannot be features", text)
    assert "branches that can be selected: evt.I16" in text
    assert "in file " in text
    assert "fullsplit.root" in text

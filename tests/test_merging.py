"""The merge stage: per-file specs into one layout (columns, scaling, caps, labels) and the
chunk plan, cut into preprocess jobs."""

from __future__ import annotations

import itertools
import json
import logging
import re

import awkward as ak
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from rootfiles import write_events

from rootml.config import Settings
from rootml.exceptions import BranchError, ConfigError, DataError, LayoutError
from rootml.merging import allocate_events, chunk_plan, job_batches, merge
from rootml.multiplicity import histogram_quantile
from rootml.preprocessing import parse_chunks
from rootml.specs import file_specs

IDS = ("run", "event", "luminosityBlock")


@pytest.fixture(scope="module")
def specs3(tmp_path_factory):
    d = tmp_path_factory.mktemp("layout")
    paths = [
        write_events(d / "a.root", 1200, seed=1, signal=True, basket=400),
        write_events(d / "b.root", 800, seed=2, basket=400),
        write_events(d / "c.root", 1000, seed=3, basket=400),
    ]
    return [file_specs(str(p), "events", identifiers=IDS) for p in paths]


def _settings(**kw):
    return Settings(tree="events", **kw)


def test_binary_layout_columns_and_scaling(specs3):
    doc = merge(specs3[:2], _settings(scaling="minmax"), labels=["1", "0"])
    assert doc["labels"] == {
        "source": "file",
        "branch": None,
        "kind": "binary",
        "classes": ["0", "1"],
    }
    assert [f["label"] for f in doc["files"]] == [1, 0]
    met = next(c for c in doc["inputs"] if c["branch"] == "MET")
    lo = min(s["branches"]["MET"]["min"] for s in specs3[:2])
    hi = max(s["branches"]["MET"]["max"] for s in specs3[:2])
    assert met["shift"] == lo
    assert met["scale"] == pytest.approx(1 / (hi - lo))
    jet = next(c for c in doc["inputs"] if c["branch"] == "Jet_pt")
    assert jet["cap"] == max(s["branches"]["Jet_pt"]["multiplicity"]["max"] for s in specs3[:2])
    assert doc["dim"] == len(doc["features"]) == sum(c["width"] for c in doc["inputs"])
    assert doc["features"][jet["offset"]] == "Jet_pt[0]"
    assert doc["pad_value"] == pytest.approx(-0.01)
    assert doc["clip"] == [0.0, 1.0]
    assert not set(IDS) & set(doc["read"])


def _pooled_cdf(paths, branch):
    import uproot

    values = np.concatenate(
        [ak.to_numpy(ak.flatten(uproot.open(p)["events"][branch].array(), axis=None))
         for p in paths]
    )  # fmt: skip
    return lambda x: (np.count_nonzero(values < x) / values.size,
                      np.count_nonzero(values <= x) / values.size)  # fmt: skip


def test_quantile_scaling_maps_the_merged_tails_of_all_files_to_the_range(tmp_path):
    """The default scaling puts each branch's 0.1 % and 99.9 % quantiles over all files
    (mixed from the files' specs) at 0 and 1: one outlier event does not squeeze the rest."""
    met = np.random.default_rng(5).gamma(2.0, 15.0, 30_000).astype(np.float32)
    met[17] = 1e6  # one broken event
    paths = [
        write_events(tmp_path / "a.root", 30_000, seed=1, signal=True, MET=met),
        write_events(tmp_path / "b.root", 20_000, seed=2),
    ]
    specs = [file_specs(str(p), "events", identifiers=IDS) for p in paths]
    doc = merge(specs, _settings(), labels=["1", "0"])
    assert doc["scaling"] == "quantile"
    assert doc["clip"] == [0.0, 1.0]
    for branch in ("MET", "Jet_pt", "HT"):
        col = next(c for c in doc["inputs"] if c["branch"] == branch)
        cdf = _pooled_cdf(paths, branch)
        lo, hi = col["shift"], col["shift"] + 1 / col["scale"]
        for x, p in ((lo, 0.001), (hi, 0.999)):  # a quantile of values with atoms (HT = 0)
            below, upto = cdf(x)
            assert below - 0.0015 <= p <= upto + 0.0015, (branch, p)
    minmax = merge(specs, _settings(scaling="minmax"), labels=["1", "0"])
    met_q = next(c for c in doc["inputs"] if c["branch"] == "MET")
    met_m = next(c for c in minmax["inputs"] if c["branch"] == "MET")
    assert 1 / met_m["scale"] > 1e6 - 1
    assert 1 / met_q["scale"] < 200
    # few distinct integers (a count, a flag) keep their exact range
    for branch in ("nPV", "trigger"):
        col = next(c for c in doc["inputs"] if c["branch"] == branch)
        lo = min(s["branches"][branch]["min"] for s in specs)
        hi = max(s["branches"][branch]["max"] for s in specs)
        assert (col["shift"], col["scale"]) == (lo, pytest.approx(1 / (hi - lo))), branch


def test_quantile_scaling_falls_back_to_min_max_for_specs_without_quantiles(specs3):
    old = json.loads(json.dumps(specs3[:2]))
    for s in old:
        for b in s["branches"].values():
            b.pop("quantiles", None)
    doc = merge(old, _settings(), labels=["1", "0"])
    minmax = merge(specs3[:2], _settings(scaling="minmax"), labels=["1", "0"])
    assert doc["inputs"] == minmax["inputs"]


def test_multiclass_and_string_labels(specs3):
    doc = merge(specs3, _settings(), labels=["2", "0", "1"])
    assert doc["labels"]["kind"] == "multiclass"
    assert [f["label"] for f in doc["files"]] == [2, 0, 1]
    doc = merge(specs3, _settings(), labels=["ttH", "ttbar", "ttH"])
    assert doc["labels"]["classes"] == ["ttH", "ttbar"]
    assert [f["label"] for f in doc["files"]] == [0, 1, 0]


def test_label_from_branch(specs3, tmp_path):
    paths = [
        write_events(
            tmp_path / f"l{i}.root", 300, seed=i, isSignal=np.arange(300, dtype=np.int32) % 2
        )
        for i in range(2)
    ]
    specs = [file_specs(str(p), "events", identifiers=IDS, label_branch="isSignal") for p in paths]
    doc = merge(specs, _settings(), label_branch="isSignal")
    assert doc["labels"]["source"] == "branch"
    assert doc["labels"]["classes"] == ["0", "1"]
    assert "isSignal" not in [c["branch"] for c in doc["inputs"]]
    assert doc["read"][-1] == "isSignal"
    with pytest.raises(DataError, match="label branch 'MET' must be a flat integer"):
        merge(specs3[:2], _settings(), label_branch="MET")


def test_single_class_and_label_count_errors(specs3):
    with pytest.raises(ConfigError, match="only one class"):
        merge(specs3[:2], _settings(), labels=["1", "1"])
    with pytest.raises(ConfigError, match="3 labels for 2 files"):
        merge(specs3[:2], _settings(), labels=["1", "0", "1"])


def test_branch_missing_in_one_file_names_it_and_closest(specs3, tmp_path):
    path = write_events(tmp_path / "nomet.root", 200, seed=5, MET=None)
    other = file_specs(str(path), "events", identifiers=IDS)
    with pytest.raises(
        BranchError, match=r"'MET' is missing \(closest: (.|\n)*in file .*nomet\.root"
    ):
        merge([specs3[0], other], _settings(), labels=["1", "0"])


def test_kind_mismatch_between_files(specs3, tmp_path):
    path = write_events(
        tmp_path / "flatjet.root", 200, seed=5, nPV=np.ones((200, 3), dtype=np.float32)
    )
    other = file_specs(str(path), "events", identifiers=IDS)
    with pytest.raises(BranchError, match=r"'nPV' is jagged here but flat"):
        merge([specs3[0], other], _settings(), labels=["1", "0"])


def test_same_basename_rejected(specs3):
    twin = json.loads(json.dumps(specs3[1]))
    twin["file"]["url"] = "/elsewhere/a.root"
    twin["file"]["basename"] = "a.root"
    with pytest.raises(ConfigError, match=r"same file name 'a\.root'"):
        merge([specs3[0], twin], _settings(), labels=["1", "0"])


def test_nan_policy_error_names_every_branch_and_its_file_at_once(specs3):
    bad = json.loads(json.dumps(specs3[1]))
    bad["branches"]["MET"]["nan"] = 4
    bad["branches"]["HT"]["inf"] = 2
    with pytest.raises(DataError) as err:
        merge([specs3[0], bad], _settings(), labels=["1", "0"])
    text = str(err.value)
    assert "2 branch(es) hold NaN or inf values" in text
    assert re.search(r"MET: 4 NaN, 0 inf \(first in .*b\.root\)", text)
    assert re.search(r"HT: 0 NaN, 2 inf \(first in .*b\.root\)", text)
    assert "--nan-policy" in text
    assert "features.nan_policy" in text
    doc = merge([specs3[0], bad], _settings(nan_policy="drop"), labels=["1", "0"])
    assert doc["nan_policy"] == "drop"


def test_caps_quantile_int_and_per_collection(specs3):
    hist_max = max(s["branches"]["Jet_pt"]["multiplicity"]["max"] for s in specs3)
    doc = merge(specs3, _settings(jagged_cap="p50"), labels=["1", "0", "0"])
    cap50 = next(c for c in doc["inputs"] if c["branch"] == "Jet_pt")["cap"]
    assert 1 <= cap50 < hist_max
    doc = merge(specs3, _settings(jagged_cap=2, jagged_caps={"Muon": 1}), labels=["1", "0", "0"])
    caps = {c["branch"]: c.get("cap") for c in doc["inputs"]}
    assert caps["Jet_pt"] == caps["Jet_eta"] == 2
    assert caps["Muon_pt"] == 1
    with pytest.raises(ConfigError, match="not a quantile"):
        merge(specs3, _settings(jagged_cap="p250"), labels=["1", "0", "0"])


def test_count_and_mask_features(specs3):
    doc = merge(specs3, _settings(counts=True, masks=True, jagged_cap=3), labels=["1", "0", "0"])
    kinds = [(e["kind"], e["collection"]) for e in doc["extras"]]
    assert kinds == [("count", "Jet"), ("mask", "Jet"), ("count", "Muon"), ("mask", "Muon")]
    assert "Jet__count" in doc["features"]
    assert "Muon__mask[2]" in doc["features"]
    assert doc["dim"] == len(doc["features"])


def test_standard_scaling_pad_outside_clip(specs3):
    doc = merge(specs3, _settings(scaling="standard", clip=5.0), labels=["1", "0", "0"])
    assert doc["clip"] == [-5.0, 5.0]
    assert doc["pad_value"] == pytest.approx(-5.1)
    with pytest.raises(ConfigError, match=r"padding value 0.5 lies inside the scaled range"):
        merge(specs3, _settings(pad_value=0.5), labels=["1", "0", "0"])


def test_nevts_and_chunks(specs3):
    doc = merge(specs3, _settings(nevts=1500, chunk_size=256), labels=["1", "0", "0"])
    used = [f["used"] for f in doc["files"]]
    assert sum(used) == 1500
    assert used == [600, 400, 500]
    for f in doc["files"]:
        ranges = [(c["start"], c["stop"]) for c in doc["chunks"] if c["file"] == f["id"]]
        assert ranges[0][0] == 0
        assert ranges[-1][1] == f["used"]
        assert all(b[0] == a[1] for a, b in itertools.pairwise(ranges))


@given(st.lists(st.integers(1, 10_000), min_size=1, max_size=8), st.integers(1, 50_000))
def test_allocate_events_properties(entries, nevts):
    used = allocate_events(entries, nevts)
    assert sum(used) == min(nevts, sum(entries))
    assert all(0 <= u <= e for u, e in zip(used, entries, strict=True))
    assert allocate_events(entries, -1) == entries


@given(st.lists(st.integers(0, 5000), min_size=1, max_size=5), st.integers(1, 3000))
def test_chunk_plan_covers_every_used_entry_once(used, size):
    plan = chunk_plan(used, size)
    for f, n in enumerate(used):
        covered = [i for c in plan if c["file"] == f for i in range(c["start"], c["stop"])]
        assert covered == list(range(n))
    assert [c["id"] for c in plan] == list(range(len(plan)))
    assert all(c["stop"] - c["start"] <= size for c in plan)


def _nanoaod_like(folder, n: int = 300) -> list[dict]:
    """Two files where, as in CMS NanoAOD, one variable is NaN in every event and one
    optional collection is never filled, in every file."""
    specs = []
    for i, signal in enumerate((True, False)):
        empty = ak.Array([[] for _ in range(n)])
        path = write_events(
            folder / f"nano{i}.root",
            n,
            seed=10 + i,
            signal=signal,
            HTXS_Higgs_y=np.full(n, np.nan, dtype=np.float32),
            FsrPhoton=ak.zip({"pt": ak.values_astype(empty, np.float32)}),
        )
        specs.append(file_specs(str(path), "events", identifiers=IDS))
    return specs


def test_branches_without_a_finite_value_anywhere_are_dropped_in_one_warning(tmp_path, caplog):
    specs = _nanoaod_like(tmp_path)
    with caplog.at_level(logging.WARNING, logger="rootml"):
        doc = merge(specs, _settings(nan_policy="replace"), labels=["1", "0"])
    read = set(doc["read"])
    assert "MET" in read
    assert "HTXS_Higgs_y" not in read
    assert "FsrPhoton_pt" not in read
    warnings = [r.getMessage() for r in caplog.records if "no finite value" in r.getMessage()]
    assert len(warnings) == 1  # one message for all of them, never one error at a time
    assert "HTXS_Higgs_y" in warnings[0]
    assert "FsrPhoton_pt" in warnings[0]

    with pytest.raises(DataError) as err:
        merge(specs, _settings(nan_policy="replace", empty_branches="error"), labels=["1", "0"])
    assert "2 branch(es) have no finite value in any file: HTXS_Higgs_y, FsrPhoton_pt" in str(
        err.value
    )


def test_exclude_applies_without_a_selection_and_takes_patterns(specs3):
    doc = merge(specs3[:2], _settings(exclude=("MET", "Jet_*")), labels=["1", "0"])
    branches = {e["branch"] for e in doc["inputs"]}
    assert "MET" not in branches
    assert not {"Jet_pt", "Jet_eta"} & branches
    assert {"HT", "Muon_pt"} <= branches
    doc = merge(specs3[:2], _settings(selected=("Jet.*", "MET")), labels=["1", "0"])
    assert [e["branch"] for e in doc["inputs"]] == ["Jet_pt", "Jet_eta", "MET"]


def test_a_lone_event_branch_taken_as_identifier_is_said(tmp_path, caplog):
    specs = [
        file_specs(
            str(write_events(tmp_path / f"{i}.root", 200, seed=i, run=None, luminosityBlock=None)),
            "events",
            identifiers=IDS,
        )
        for i in range(2)
    ]
    with caplog.at_level(logging.WARNING, logger="rootml"):
        doc = merge(specs, _settings(), labels=["1", "0"])
    assert "event" not in doc["read"]
    said = [r.getMessage() for r in caplog.records if "identifier" in r.getMessage()]
    assert len(said) == 1
    assert said[0].startswith("took event as identifier(s)")
    assert "--identifiers" in said[0]


def test_the_cms_identifiers_are_not_a_warning(specs3, caplog):
    with caplog.at_level(logging.WARNING, logger="rootml"):
        merge(specs3[:2], _settings(), labels=["1", "0"])
    assert not [r for r in caplog.records if "identifier" in r.getMessage()]


def test_the_auto_cap_ignores_an_outlier_event_and_says_what_it_cuts(tmp_path, caplog):
    rng = np.random.default_rng(3)
    specs, counts = [], []
    for i in range(2):
        n_jet = rng.poisson(3.0, 4000)
        if i == 0:
            n_jet[7] = 400  # one event of one file: a broken reconstruction
        pt = ak.unflatten(rng.exponential(30.0, n_jet.sum()).astype(np.float32), n_jet)
        path = write_events(tmp_path / f"{i}.root", 4000, seed=i, Jet=ak.zip({"pt": pt}))
        specs.append(file_specs(str(path), "events", identifiers=IDS))
        counts.append(n_jet)
    n_jet = np.concatenate(counts)
    typical = histogram_quantile(np.bincount(n_jet), 0.999)
    with caplog.at_level(logging.WARNING, logger="rootml"):
        doc = merge(specs, _settings(), labels=["1", "0"])
    [jet] = [e for e in doc["inputs"] if e["branch"] == "Jet_pt"]
    assert jet["cap"] == 2 * typical < 400
    assert jet["truncated"] == pytest.approx(np.mean(n_jet > jet["cap"]))
    said = [r.getMessage() for r in caplog.records if "jagged caps" in r.getMessage()]
    assert len(said) == 1
    assert f"Jet at {jet['cap']}" in said[0]
    # max keeps every object; a short tail keeps max under auto as well
    widest = merge(specs, _settings(jagged_cap="max"), labels=["1", "0"])
    assert [e["cap"] for e in widest["inputs"] if e["branch"] == "Jet_pt"] == [400]
    short = merge(specs[1:], _settings(), label_branch="trigger")  # the file without it
    [jet] = [e for e in short["inputs"] if e["branch"] == "Jet_pt"]
    assert jet["cap"] == int(counts[1].max())
    assert jet["truncated"] == 0


# ------------------------------------------------------------------ preprocess batches


@given(
    sizes=st.lists(st.integers(1, 5000), min_size=1, max_size=60),
    max_jobs=st.integers(1, 20),
    min_events=st.integers(1, 20000),
)
def test_job_batches_cover_the_plan_once_in_order(sizes, max_jobs, min_events):
    chunks, start = [], 0
    for i, size in enumerate(sizes):
        chunks.append({"id": i, "file": 0, "start": start, "stop": start + size})
        start += size
    batches = job_batches(chunks, max_jobs, min_events)
    assert 1 <= len(batches) <= max_jobs
    ids = [i for b in batches for i in parse_chunks(b, len(chunks))]
    assert ids == list(range(len(chunks)))
    assert all(parse_chunks(b, len(chunks)) for b in batches)  # no empty batch


def test_job_batches_balance_events_and_skip_tiny_jobs():
    chunks = [{"id": i, "file": 0, "start": 0, "stop": 100_000} for i in range(100)]
    assert job_batches(chunks, 4) == ["0-24", "25-49", "50-74", "75-99"]
    assert job_batches(chunks[:3], 8) == ["0-0", "1-1", "2-2"]
    small = [{"id": i, "file": 0, "start": 0, "stop": 1000} for i in range(40)]
    assert job_batches(small, 8) == ["0-39"]  # 40k events: one job, not 8 tiny ones
    with pytest.raises(LayoutError, match="number of preprocess jobs must be at least 1"):
        job_batches(chunks, 0)


def test_auto_chunk_size_grows_for_narrow_rows_and_an_explicit_one_is_kept():
    from rootml.merging import AUTO_CHUNK_BYTES, AUTO_CHUNK_EVENTS, auto_chunk, chunk_plan

    assert auto_chunk("auto", 300) == AUTO_CHUNK_EVENTS  # wide rows: 10k events, 12 MB
    two = auto_chunk("auto", 2)  # two 4-byte columns: a shard of 8 MiB, not of 80 kB
    assert two == AUTO_CHUNK_BYTES // 8
    assert len(chunk_plan([5_000_000, 5_000_000], two)) == 10  # not 1,000 shards
    assert auto_chunk(10_000, 2) == 10_000  # what the user asked for is what they get
    assert auto_chunk(-1, 2) == -1
    with pytest.raises(ConfigError, match="or auto"):
        Settings(chunk_size="big")

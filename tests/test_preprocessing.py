from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import awkward as ak
import h5py
import numpy as np
import pytest
import uproot
import xxhash
from hypothesis import given
from hypothesis import strategies as st
from rootfiles import event_arrays, write_events, write_tree

from rootml.config import Settings
from rootml.exceptions import DataError, InputFileError, LayoutError
from rootml.layout import write_layout
from rootml.merging import merge
from rootml.preprocessing import parse_chunks, preprocess, shard_name
from rootml.specs import file_specs
from rootml.transform import (
    TEST,
    TRAIN,
    VAL,
    _gather_index,
    raw_rows,
    scale_rows,
    split_of,
    transform,
)

IDS = ("run", "event", "luminosityBlock")


def _layout(paths, labels=("1", "0"), **kw):
    specs = [file_specs(str(p), "events", identifiers=IDS) for p in paths]
    return merge(specs, Settings(tree="events", **kw), labels=list(labels))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("pre")
    return [
        write_events(d / "sig.root", 1500, seed=11, signal=True, basket=300),
        write_events(d / "bkg.root", 1000, seed=12, basket=300),
    ]


def reference_rows(arrays, layout):
    """The transform written the slow, obvious way: one event at a time."""
    lo, hi = layout["clip"]
    pad = layout["pad_value"]
    rows = []
    for event in ak.to_list(arrays):
        row = [pad] * layout["dim"]
        for col in layout["inputs"]:
            values = event[col["branch"]]
            values = [values] if col["kind"] == "flat" else values[: col["width"]]
            for i, v in enumerate(values):
                s = (np.float32(v) - np.float32(col["shift"])) * np.float32(col["scale"])
                row[col["offset"] + i] = min(max(s, lo), hi)
        for extra in layout["extras"]:
            n = len(event[extra["branch"]])
            if extra["kind"] == "count":
                row[extra["offset"]] = min(max(n * extra["scale"] + lo, lo), hi)
            else:
                for i in range(extra["width"]):
                    row[extra["offset"] + i] = float(i < n)
        rows.append(row)
    return np.asarray(rows, dtype=np.float32)


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"jagged_cap": 2},
        {"scaling": "standard", "clip": 3.0},
        {"counts": True, "masks": True, "jagged_cap": "p50"},
    ],
    ids=["minmax-max", "cap2", "standard", "counts-masks"],
)
def test_transform_matches_per_event_reference(files, kw):
    layout = _layout(files, **kw)
    arrays = uproot.open(files[0])["events"].arrays(layout["read"], entry_stop=400)
    x, bad = transform(arrays, layout)
    assert x.dtype == np.float32
    assert x.shape == (400, layout["dim"])
    assert not bad.any()
    np.testing.assert_allclose(x, reference_rows(arrays, layout), rtol=0, atol=1e-6)


def test_truncation_keeps_leading_objects(files):
    layout = _layout(files, jagged_cap=1)
    arrays = uproot.open(files[0])["events"].arrays(layout["read"], entry_stop=50)
    x, _ = transform(arrays, layout)
    col = next(c for c in layout["inputs"] if c["branch"] == "Jet_pt")
    first = ak.to_numpy(ak.fill_none(ak.firsts(arrays["Jet_pt"]), np.nan))
    has = ~np.isnan(first)
    expect = (first[has].astype(np.float32) - np.float32(col["shift"])) * np.float32(col["scale"])
    np.testing.assert_allclose(x[has, col["offset"]], np.clip(expect, 0, 1), atol=1e-7)
    assert (x[~has, col["offset"]] == layout["pad_value"]).all()


def test_split_stable_across_chunkings_and_fractions(files, tmp_path):
    a = _layout(files, chunk_size=128)
    b = _layout(files, chunk_size=1000, nevts=2000)
    out_a = preprocess(a, range(len(a["chunks"])), tmp_path / "a")
    out_b = preprocess(b, range(len(b["chunks"])), tmp_path / "b")

    def collect(paths):
        table = {}
        for p in paths:
            with h5py.File(p) as h5:
                for e, s, row in zip(h5["entry"][:], h5["split"][:], h5["x"][:], strict=True):
                    table[(h5.attrs["file"], int(e))] = (int(s), row)
        return table

    ta, tb = collect(out_a), collect(out_b)
    assert len(ta) == 2500
    assert len(tb) == 2000
    for key, (split, row) in tb.items():
        assert ta[key][0] == split
        np.testing.assert_array_equal(ta[key][1], row)
    fractions = np.bincount([s for s, _ in ta.values()], minlength=3) / len(ta)
    np.testing.assert_allclose(fractions, [0.64, 0.16, 0.20], atol=0.04)


@given(st.text(min_size=1, max_size=20), st.integers(0, 2**31), st.integers(0, 10**9))
def test_split_is_a_pure_function_of_file_entry_seed(name, seed, first):
    entries = np.arange(first, first + 50)
    s1 = split_of(name, entries, seed, 0.1, 0.3)
    s2 = np.concatenate(
        [split_of(name, entries[:17], seed, 0.1, 0.3), split_of(name, entries[17:], seed, 0.1, 0.3)]
    )
    np.testing.assert_array_equal(s1, s2)
    assert set(np.unique(s1)) <= {TRAIN, VAL, TEST}


def test_shard_contents_and_attrs(files, tmp_path):
    layout = _layout(files, chunk_size=700)
    out = preprocess(layout, [2], tmp_path / "one.h5")
    assert out == [tmp_path / "one.h5"]
    chunk = layout["chunks"][2]
    with h5py.File(out[0]) as h5:
        assert h5.attrs["layout_digest"] == layout["digest"]
        assert h5["x"].dtype == np.float32
        assert h5["x"].shape == (chunk["stop"] - chunk["start"], layout["dim"])
        assert (h5["y"][:] == layout["files"][chunk["file"]]["label"]).all()
        assert h5["entry"][0] == chunk["start"]
    # the shard and its record, nothing else (no temporary file left)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.h5", "one.json"]
    record = json.loads((tmp_path / "one.json").read_text())
    assert record["sha256"] == hashlib.sha256(out[0].read_bytes()).hexdigest()
    assert record["xxh3_128"] == xxhash.xxh3_128(out[0].read_bytes()).hexdigest()
    assert record["size"] == out[0].stat().st_size
    assert record["rows"] == chunk["stop"] - chunk["start"]
    assert record["chunk"] == 2


def _with_nans(tmp_path):
    arrays = event_arrays(300, 4)
    met = arrays["MET"].copy()
    met[[3, 10, 11]] = np.nan
    arrays["MET"] = met
    return write_tree(tmp_path / "nan.root", arrays)


def test_nan_policies(files, tmp_path):
    path = _with_nans(tmp_path)
    with pytest.raises(DataError, match="MET: 3 NaN, 0 inf"):
        _layout([path, files[1]])
    drop = _layout([path, files[1]], nan_policy="drop")
    [shard] = preprocess(drop, [0], tmp_path / "drop.h5")
    with h5py.File(shard) as h5:
        assert h5["x"].shape[0] == 297
        assert not np.isin([3, 10, 11], h5["entry"][:]).any()
    replace = _layout([path, files[1]], nan_policy="replace")
    [shard] = preprocess(replace, [0], tmp_path / "replace.h5")
    col = next(c for c in replace["inputs"] if c["branch"] == "MET")
    with h5py.File(shard) as h5:
        assert h5["x"].shape[0] == 300
        assert (h5["x"][[3, 10, 11], col["offset"]] == replace["pad_value"]).all()


def test_label_branch_gives_per_event_y(tmp_path):
    paths = [
        write_events(
            tmp_path / f"m{i}.root", 200, seed=i, cls=(np.arange(200) % 3).astype(np.int32)
        )
        for i in range(2)
    ]
    specs = [file_specs(str(p), "events", identifiers=IDS, label_branch="cls") for p in paths]
    layout = merge(specs, Settings(tree="events"), label_branch="cls")
    [shard] = preprocess(layout, [0], tmp_path / "s.h5")
    with h5py.File(shard) as h5:
        np.testing.assert_array_equal(h5["y"][:], h5["entry"][:] % 3)


def test_failure_leaves_no_shard(files, tmp_path):
    layout = _layout(files)
    broken = tmp_path / "sig.root"
    broken.write_bytes(files[0].read_bytes()[: files[0].stat().st_size // 2])
    with pytest.raises(InputFileError, match=r"(.|\n)*in file .*sig\.root"):
        preprocess(layout, [0], tmp_path / "out", paths={"sig.root": str(broken)})
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_parse_chunks():
    assert parse_chunks("3", 5) == [3]
    assert parse_chunks(["0-2", "4"], 5) == [0, 1, 2, 4]
    assert parse_chunks("all", 3) == [0, 1, 2]
    with pytest.raises(LayoutError, match="outside the plan"):
        parse_chunks("7", 5)
    with pytest.raises(LayoutError, match="not a number"):
        parse_chunks("x", 5)


@pytest.mark.parametrize(
    "kw", [{}, {"counts": True, "masks": True, "jagged_cap": 2}, {"scaling": "standard"}]
)
def test_raw_rows_and_named_events_scale_to_the_shard_rows(files, kw):
    from rootml.transform import events_to_raw, raw_rows, scale_rows

    layout = _layout(files, **kw)
    arrays = uproot.open(files[0])["events"].arrays(layout["read"], entry_stop=300)
    x, _ = transform(arrays, layout)
    raw = raw_rows(arrays, layout)
    assert np.isnan(raw).any()  # missing objects are NaN in the raw vector
    np.testing.assert_array_equal(scale_rows(raw, layout), x)
    np.testing.assert_array_equal(scale_rows(events_to_raw(ak.to_list(arrays), layout), layout), x)


def test_named_event_errors(files):
    from rootml.transform import events_to_raw

    layout = _layout(files)
    event = ak.to_list(uproot.open(files[0])["events"].arrays(layout["read"], entry_stop=1))[0]
    with pytest.raises(DataError, match=r"unknown branch 'Jet_ptt' \(closest: 'Jet_pt'"):
        events_to_raw([{**event, "Jet_ptt": [1.0]}], layout)
    with pytest.raises(DataError, match="lacks branch 'MET'"):
        events_to_raw([{k: v for k, v in event.items() if k != "MET"}], layout)
    with pytest.raises(DataError, match="'Jet_pt' must be a list of numbers"):
        events_to_raw([{**event, "Jet_pt": 3.0}], layout)
    with pytest.raises(DataError, match="'MET' must be a number"):
        events_to_raw([{**event, "MET": "high"}], layout)
    # null is a missing value (padded, as a record file's missing value is in training); an
    # absent branch is one only for records (absent_ok)
    offset = {c["branch"]: c["offset"] for c in layout["inputs"]}
    row = events_to_raw([event], layout)[0]
    nulled = events_to_raw([{**event, "MET": None, "Jet_pt": [None, *event["Jet_pt"][1:]]}], layout)
    assert np.isnan(nulled[0, offset["MET"]])
    assert np.isnan(nulled[0, offset["Jet_pt"]])
    assert (np.isnan(nulled[0]) == np.isnan(row)).sum() == row.size - 2
    absent = {k: v for k, v in event.items() if k != "MET"}
    np.testing.assert_array_equal(
        events_to_raw([absent], layout, absent_ok=True)[0, offset["MET"]], np.float32(np.nan)
    )


@given(
    counts=st.lists(st.integers(0, 40), min_size=1, max_size=300),
    width=st.integers(1, 50),
)
def test_gather_index_places_the_leading_objects_of_every_event(counts, width):
    counts = np.asarray(counts, dtype=np.int64)
    dim = width + 3
    src, dst = _gather_index(counts, width, dim)
    starts = np.cumsum(counts) - counts
    expected = {
        (int(starts[i]) + j, i * dim + j)
        for i in range(counts.size)
        for j in range(min(counts[i], width))
    }
    assert set(zip(src.tolist(), dst.tolist(), strict=True)) == expected
    assert src.size == len(expected)  # each object once


@pytest.mark.parametrize("policy", ["drop", "replace"])
def test_infinities_follow_the_nan_policy_like_nans(files, tmp_path, policy):
    """+-inf used to be clipped to the edge of the range instead of following the policy,
    while the served model (scale_rows) pads them: training and serving disagreed."""
    arrays = event_arrays(200, 6)
    met = arrays["MET"].copy()
    met[[5, 6]] = [np.inf, -np.inf]
    arrays["MET"] = met
    path = write_tree(tmp_path / "inf.root", arrays)
    layout = _layout([path, files[1]], nan_policy=policy)
    [shard] = preprocess(layout, [0], tmp_path / "s.h5")
    col = next(c for c in layout["inputs"] if c["branch"] == "MET")
    with h5py.File(shard) as h5:
        x, entry = h5["x"][:], h5["entry"][:]
    if policy == "drop":
        assert len(x) == 198
        assert not np.isin([5, 6], entry).any()
    else:
        assert (x[[5, 6], col["offset"]] == layout["pad_value"]).all()
        with uproot.open(path) as f:
            raw = raw_rows(f["events"].arrays(layout["read"]), layout)
        assert np.array_equal(scale_rows(raw, layout), x)


@pytest.fixture
def small_disk(tmp_path):
    """A 128 KiB tmpfs: a real full disk for a step's outputs (needs the right to mount)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_preprocess_on_a_full_disk_is_one_message_and_leaves_no_shard(files, tmp_path, small_disk):
    layout = _layout(files, chunk_size=500)
    assert 2500 * layout["dim"] * 4 > 2 * 128 * 1024  # the rows alone overflow the disk
    specs = write_layout(tmp_path / "layout.json", layout)
    out = small_disk / "shards"
    cmd = [sys.executable, "-m", "rootml", "preprocess", "--layout", str(specs)]
    done = subprocess.run(
        [*cmd, "--chunk", "all", "--out", str(out)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "no space left on the device" in done.stderr
    assert str(small_disk) in done.stderr
    # what was written completely stays, with its record; nothing half-written is left
    left = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert all(not n.startswith(".") for n in left), left
    shards = [n for n in left if n.endswith(".h5")]
    assert sorted(n.replace(".h5", ".json") for n in shards) == [
        n for n in left if n.endswith(".json")
    ]
    assert len(shards) < len(layout["chunks"])


def test_consecutive_small_chunks_are_read_together_into_the_same_shards(files, tmp_path):
    from rootml.preprocessing import SPAN_BYTES, _spans

    layout = _layout(files, chunk_size=200)
    ids = range(len(layout["chunks"]))
    together = preprocess(layout, ids, tmp_path / "together")  # runs of chunks, one read each
    for i in ids:  # one chunk per call: one read per chunk
        preprocess(layout, [i], tmp_path / "alone" / shard_name(i))
    for path in together:
        with h5py.File(path) as a, h5py.File(tmp_path / "alone" / path.name) as b:
            for key in ("x", "y", "split", "entry"):
                assert np.array_equal(a[key][:], b[key][:]), (path.name, key)
    items = [(c, tmp_path) for c in layout["chunks"]]
    spans = _spans(items, layout["dim"] * 4)
    assert len(spans) == 2  # one run per file: 1,500 and 1,000 rows are far below the limit
    assert [c["id"] for c, _ in spans[0]] == list(range(8))
    assert len(_spans(items, SPAN_BYTES // 200)) == len(items)  # a chunk fills a span alone
    gap = [items[0], items[2]]  # not consecutive: read apart
    assert len(_spans(gap, 4)) == 2

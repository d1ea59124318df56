"""Scoring helpers that need no model: the rows of a split as evaluation reads them."""

from __future__ import annotations

import h5py
import numpy as np

from rootml.scoring import split_rows
from rootml.shards import Shard
from rootml.transform import TEST, TRAIN


def _shard(path, label: int, n: int) -> Shard:
    split = np.where(np.arange(n) % 5 == 0, TEST, TRAIN).astype(np.int8)
    with h5py.File(path, "w") as h5:
        h5["x"] = np.full((n, 2), label, np.float32)
        h5["y"] = np.full(n, label, np.int32)
        h5["split"] = split
        h5["entry"] = np.arange(n, dtype=np.int64)
        h5.attrs["file"] = f"file{label}.root"
    counts = np.bincount(split, minlength=3)
    return Shard(path, n, tuple(int(c) for c in counts))


def test_a_limited_sample_of_a_split_comes_from_every_shard(tmp_path):
    # the first file alone holds more train rows than the limit (a 1M-event run's first file):
    # a sample from the head would miss the second class and the KS test would fail
    shards = [_shard(tmp_path / "a.h5", 0, 5000), _shard(tmp_path / "b.h5", 1, 1000)]
    rows = list(split_rows(shards, TRAIN, limit=1000))
    y = np.concatenate([r["y"] for r in rows])
    assert len(y) <= 1000 + len(shards)
    # 4,800 train rows: every 5th of each file, so both files in the split's proportions
    assert np.bincount(y).tolist() == [800, 160]
    assert all((r["x"][:, 0] == r["y"]).all() for r in rows)


def test_without_a_limit_every_row_of_the_split(tmp_path):
    shards = [_shard(tmp_path / "a.h5", 0, 50), _shard(tmp_path / "b.h5", 1, 20)]
    rows = list(split_rows(shards, TEST))
    assert [len(r["y"]) for r in rows] == [10, 4]
    assert rows[1]["entry"].tolist() == [0, 5, 10, 15]

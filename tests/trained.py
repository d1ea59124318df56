"""Shards and a bundle trained on them, shared by the model-path tests (fixtures ``data`` and
``bundle`` in conftest.py): real Keras training on shards made from uproot-written files."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import h5py

from rootml.config import Settings
from rootml.merging import merge
from rootml.preprocessing import preprocess
from rootml.sample import make_sample
from rootml.specs import file_specs
from rootml.training import TrainOptions

IDS = ("run", "event", "luminosityBlock")
FAST = TrainOptions(epochs=2, batch_size=128, seed=3, patience=0)


def make_data(tmp, events=3000, labels=("1", "0"), files=None, **settings):
    if files is None:
        files = make_sample(tmp / "sample", events, seed=4).files
    specs = [file_specs(str(f), "events", identifiers=IDS) for f in files]
    layout = merge(
        specs,
        Settings(tree="events", chunk_size=700, jagged_cap="p99", **settings),
        labels=list(labels),
    )
    shards = preprocess(layout, range(len(layout["chunks"])), tmp / "shards")
    return layout, shards, files


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def edited_shard(shard: Path, folder: Path, edit) -> Path:
    """A copy of ``shard`` changed by ``edit(h5)``, re-recorded as if preprocess wrote it."""
    from rootml.shards import write_shard_record
    from rootml.storage import file_checksums

    copy = folder / shard.name
    shutil.copy(shard, copy)
    with h5py.File(copy, "r+") as h5:
        edit(h5)
        attrs, rows = dict(h5.attrs), len(h5["y"])
    write_shard_record(copy, copy.stat().st_size, file_checksums(copy), rows, attrs)
    return copy


def plan_of(layout: dict, shards: list[Path]) -> dict:
    """``layout`` with only the chunks of ``shards`` in its plan."""
    ids = set()
    for p in shards:
        with h5py.File(p) as h5:
            ids.add(int(h5.attrs["chunk"]))
    return {**layout, "chunks": [c for c in layout["chunks"] if c["id"] in ids]}

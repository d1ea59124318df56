"""Read the HDF5 shards written by ``rootml preprocess``: check they belong to one layout,
count rows per split, and stream shuffled blocks of one split with bounded memory.

No TensorFlow here: training wraps :func:`blocks` in a ``tf.data`` pipeline, evaluation
iterates it directly.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from .exceptions import LayoutError
from .preprocessing import SPLIT_NAMES


@dataclass(frozen=True)
class Shard:
    path: Path
    rows: int
    counts: tuple[int, int, int]  # train, val, test


def open_shards(paths: Sequence[str | Path], digest: str, dim: int) -> list[Shard]:
    """Check every shard (readable, same layout digest, width ``dim``) and count its splits."""
    if not paths:
        raise LayoutError("no shards given; run 'rootml preprocess' first and pass its outputs")
    out = []
    for p in sorted({Path(p) for p in paths}):
        try:
            with h5py.File(p, "r") as h5:
                got = h5.attrs.get("specs_digest")
                if got != digest:
                    raise LayoutError(
                        f"shard was built from other specs (digest {str(got)[:12]}..., expected "
                        f"{digest[:12]}...); rerun 'rootml preprocess' with this specs.json\n"
                        f"in file {p}"
                    )
                if h5["x"].shape[1] != dim:
                    raise LayoutError(
                        f"shard rows are {h5['x'].shape[1]} wide, expected {dim}\nin file {p}"
                    )
                split = h5["split"][:]
        except (OSError, KeyError) as err:
            raise LayoutError(f"not a readable rootml shard: {err}\nin file {p}") from None
        counts = np.bincount(split, minlength=3)
        out.append(Shard(p, int(split.size), (int(counts[0]), int(counts[1]), int(counts[2]))))
    return out


def split_total(shards: Sequence[Shard], split: int) -> int:
    return sum(s.counts[split] for s in shards)


def read_split(path: Path, split: int) -> tuple[np.ndarray, np.ndarray]:
    """``x`` and ``y`` of one split of one shard (the whole shard is read: it is one chunk)."""
    with h5py.File(path, "r") as h5:
        mask = h5["split"][:] == split
        x = h5["x"][:]
        y = h5["y"][:]
    return x[mask], y[mask]


def blocks(
    shards: Sequence[Shard],
    split: int,
    *,
    rng: np.random.Generator | None = None,
    window: int = 262_144,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(x, y)`` blocks of one split.

    With ``rng``, shards are visited in a random order and rows are shuffled across every
    group of shards holding about ``window`` rows of that split, so each epoch mixes events
    of different chunks and files. Without it, blocks come in shard order, unshuffled.
    Memory is bounded by ``window`` rows plus one shard.
    """
    order = [s for s in shards if s.counts[split]]
    if rng is not None:
        order = [order[i] for i in rng.permutation(len(order))]
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    held = 0
    for shard in order:
        x, y = read_split(shard.path, split)
        if rng is None:
            yield x, y
            continue
        xs.append(x)
        ys.append(y)
        held += len(y)
        if held >= window:
            yield _shuffled(xs, ys, rng)
            xs, ys, held = [], [], 0
    if xs:
        yield _shuffled(xs, ys, rng)


def aligned(
    source: Iterator[tuple[np.ndarray, np.ndarray]], batch: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Re-cut blocks so every block but the last holds a multiple of ``batch`` rows: batches
    then never straddle two blocks, and an epoch has exactly ceil(rows / batch) of them."""
    held_x: np.ndarray | None = None
    held_y: np.ndarray | None = None
    for block_x, block_y in source:
        x, y = block_x, block_y
        if held_x is not None and len(held_y):
            x, y = np.concatenate([held_x, block_x]), np.concatenate([held_y, block_y])
        cut = len(y) - len(y) % batch
        if cut:
            yield x[:cut], y[:cut]
        held_x, held_y = x[cut:], y[cut:]
    if held_y is not None and len(held_y):
        yield held_x, held_y


def _shuffled(xs, ys, rng) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate(xs) if len(xs) > 1 else xs[0]
    y = np.concatenate(ys) if len(ys) > 1 else ys[0]
    perm = rng.permutation(len(y))
    return x[perm], y[perm]


def describe(shards: Sequence[Shard]) -> str:
    totals = [split_total(shards, i) for i in range(3)]
    return ", ".join(f"{n:,} {name}" for n, name in zip(totals, SPLIT_NAMES, strict=True))

"""Read the HDF5 shards written by ``rootml preprocess``: check they belong to one layout,
count rows per split, and stream shuffled blocks of one split with bounded memory.

No TensorFlow here: training wraps :func:`blocks` in a ``tf.data`` pipeline, evaluation
iterates it directly.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from .exceptions import ForeignShardError, LayoutError
from .layout import digest_of
from .storage import FAST_CHECKSUM, fast_checksum, sha256_file, write_json
from .transform import SPLIT_NAMES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shard:
    path: Path
    rows: int
    counts: tuple[int, int, int]  # train, val, test


RERUN = "re-run the preprocess step that wrote it (rootml run --resume re-runs it)"


def record_path(shard: Path) -> Path:
    """The record ``rootml preprocess`` writes beside each shard."""
    return shard.with_suffix(".json")


def write_shard_record(shard: Path, size: int, sums: dict, rows: int, attrs: dict) -> None:
    """``shard-N.json``: size, checksums (sha256 and the fast one readers verify), rows,
    chunk, file, entries and layout digest."""
    doc = {"shard": shard.name, "size": int(size), **sums, "rows": int(rows)}
    doc.update({k: str(attrs[k]) for k in ("layout_digest", "file")})
    doc.update({k: int(attrs[k]) for k in ("chunk", "start", "stop")})
    write_json(record_path(shard), doc)


def verify_shard(shard: Path, *, checksum: bool = True) -> dict:
    """The shard is the one preprocess wrote: its record exists and its size (and, with
    ``checksum``, its content: the fast checksum, else sha256 for a record without one)
    agree (a flipped byte, a truncated or a replaced file is an error naming it)."""
    path = record_path(shard)
    try:
        doc = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise LayoutError(
            f"shard {shard} has no record {path.name}: it was not written completely; {RERUN}"
        ) from None
    except (OSError, ValueError) as err:
        raise LayoutError(f"unreadable shard record ({err}); {RERUN}\nin file {path}") from None
    size = shard.stat().st_size
    if size != doc.get("size") or (checksum and not _content_matches(shard, doc)):
        raise LayoutError(
            f"shard {shard} is not the file preprocess wrote (size {size:,} bytes, recorded "
            f"{doc.get('size')}; or its checksum differs): it was damaged or replaced; {RERUN}"
        )
    return doc


def _content_matches(shard: Path, doc: dict) -> bool:
    if FAST_CHECKSUM in doc:
        return fast_checksum(shard) == doc[FAST_CHECKSUM]
    return sha256_file(shard) == doc.get("sha256")


class ShardSet(list):
    """The shards :func:`open_shards` checked; their content is verified in a thread while the
    caller reads them (XXH3-128 hashes 1 GB in ~0.1 s): call :meth:`verified` before writing
    any output that depends on them."""

    def __init__(self, shards: Sequence[Shard]) -> None:
        super().__init__(shards)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def verify_in_background(self) -> None:
        def run() -> None:
            t0 = time.perf_counter()
            try:
                for shard in self:
                    verify_shard(shard.path)
            except BaseException as err:  # noqa: BLE001  re-raised by verified()
                self._error = err
                return
            size = sum(s.path.stat().st_size for s in self)
            log.info(
                "shards: %d verified against their records and the chunk plan (checksums of "
                "%.0f MB in %.2f s, beside the reading)",
                len(self),
                size / 1e6,
                time.perf_counter() - t0,
            )

        self._thread = threading.Thread(target=run, name="verify-shards", daemon=True)
        self._thread.start()

    def verified(self) -> None:
        """Wait for the sha256 verification; raise its error, if any."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            raise self._error


def open_shards(
    paths: Sequence[str | Path], digest: str, dim: int, *, layout: dict | None = None
) -> ShardSet:
    """Check every shard (readable, same layout digest, width ``dim``) and count its splits.
    With the ``layout``, the set is also checked against it: each shard's record (size now,
    sha256 in a thread: see :class:`ShardSet`), labels within the classes, and the chunk plan
    (every chunk once, with its rows)."""
    if not paths:
        raise LayoutError("no shards given; run 'rootml preprocess' first and pass its outputs")
    out = []
    chunks: dict[int, list[tuple[Path, int]]] = {}
    for p in sorted({Path(p) for p in paths}):
        if layout is not None:
            verify_shard(p, checksum=False)
        try:
            with h5py.File(p, "r") as h5:
                got = digest_of(h5.attrs)
                if got != digest:
                    raise ForeignShardError(
                        f"shard was built for another layout (digest {str(got)[:12]}..., expected "
                        f"{digest[:12]}...); rerun 'rootml preprocess' with this layout.json\n"
                        f"in file {p}"
                    )
                if h5["x"].shape[1] != dim:
                    raise ForeignShardError(
                        f"shard rows are {h5['x'].shape[1]} wide, expected {dim}\nin file {p}"
                    )
                split = h5["split"][:]
                if layout is not None:
                    _check_labels(h5["y"][:], layout, p)
                    chunks.setdefault(int(h5.attrs["chunk"]), []).append((p, int(split.size)))
        except (OSError, KeyError) as err:
            if layout is not None:
                verify_shard(p)  # damaged where HDF5 looks first: say so, as the digest shows
            raise LayoutError(f"not a readable rootml shard: {err}\nin file {p}") from None
        counts = np.bincount(split, minlength=3)
        out.append(Shard(p, int(split.size), (int(counts[0]), int(counts[1]), int(counts[2]))))
    shards = ShardSet(out)
    if layout is not None:
        _check_plan(chunks, layout)
        shards.verify_in_background()
    return shards


def _check_labels(y: np.ndarray, layout: dict, path: Path) -> None:
    k = len(layout["labels"]["classes"])
    bad = (y < 0) | (y >= k)
    if bad.any():
        raise LayoutError(
            f"{int(bad.sum()):,} rows have labels outside 0-{k - 1} (e.g. {int(y[bad][0])}) "
            f"for the {k} classes of the layout; {RERUN}\nin file {path}"
        )


def _check_plan(chunks: dict[int, list[tuple[Path, int]]], layout: dict) -> None:
    """Every chunk of the plan has exactly one shard, with the planned rows (fewer only when
    nan_policy drops events or a selection keeps some)."""
    may_drop = layout.get("nan_policy") == "drop" or bool(
        (layout.get("derived") or {}).get("selection")
    )
    names = [f["basename"] for f in layout["files"]]
    for chunk in layout["chunks"]:
        where = (
            f"chunk {chunk['id']} ({names[chunk['file']]} entries {chunk['start']}-{chunk['stop']})"
        )
        found = chunks.pop(chunk["id"], [])
        if not found:
            raise LayoutError(
                f"{where} of the plan has no shard among those given: a preprocess step did not "
                "finish or its shards were not passed; re-run preprocess for it (rootml run "
                "--resume)"
            )
        if len(found) > 1:
            raise LayoutError(
                f"{where} has {len(found)} shards: {', '.join(str(p) for p, _ in found)}; "
                "pass each once"
            )
        path, rows = found[0]
        planned = chunk["stop"] - chunk["start"]
        if rows > planned or (rows < planned and not may_drop):
            raise LayoutError(
                f"{where} planned {planned:,} rows, shard {path} holds {rows:,}; {RERUN}"
            )
    if chunks:
        extra = ", ".join(str(p) for found in chunks.values() for p, _ in found)
        raise LayoutError(f"shards of chunks the plan does not have: {extra}; pass only this run's")


def split_total(shards: Sequence[Shard], split: int) -> int:
    return sum(s.counts[split] for s in shards)


def read_split(path: Path, split: int) -> tuple[np.ndarray, ...]:
    """``x`` and ``y`` of one split of one shard, and ``w`` where the shard has event weights
    (the whole shard is read: it is one chunk)."""
    with h5py.File(path, "r") as h5:
        mask = h5["split"][:] == split
        arrays = [h5["x"][:], h5["y"][:].astype(np.int32, copy=False)]
        if "w" in h5:
            arrays.append(h5["w"][:])
    return tuple(a[mask] for a in arrays)


def blocks(
    shards: Sequence[Shard],
    split: int,
    *,
    rng: np.random.Generator | None = None,
    window: int = 262_144,
) -> Iterator[tuple[np.ndarray, ...]]:
    """Yield ``(x, y)`` blocks of one split (``(x, y, w)`` for weighted shards).

    With ``rng``, shards are visited in a random order and rows are shuffled across every
    group of shards holding about ``window`` rows of that split, so each epoch mixes events
    of different chunks and files. Without it, blocks come in shard order, unshuffled.
    Memory is bounded by ``window`` rows plus one shard.
    """
    order = [s for s in shards if s.counts[split]]
    if rng is not None:
        order = [order[i] for i in rng.permutation(len(order))]
    held: list[tuple[np.ndarray, ...]] = []
    rows = 0
    for shard in order:
        arrays = read_split(shard.path, split)
        if rng is None:
            yield arrays
            continue
        held.append(arrays)
        rows += len(arrays[1])
        if rows >= window:
            yield _shuffled(held, rng)
            held, rows = [], 0
    if held:
        yield _shuffled(held, rng)


def aligned(
    source: Iterator[tuple[np.ndarray, ...]], batch: int
) -> Iterator[tuple[np.ndarray, ...]]:
    """Re-cut blocks so every block but the last holds a multiple of ``batch`` rows: batches
    then never straddle two blocks, and an epoch has exactly ceil(rows / batch) of them."""
    held: tuple[np.ndarray, ...] | None = None
    for block in source:
        arrays = block
        if held is not None and len(held[1]):
            arrays = tuple(np.concatenate([h, b]) for h, b in zip(held, block, strict=True))
        n = len(arrays[1])
        cut = n - n % batch
        if cut:
            yield tuple(a[:cut] for a in arrays)
        held = tuple(a[cut:] for a in arrays)
    if held is not None and len(held[1]):
        yield held


def _shuffled(held: list[tuple[np.ndarray, ...]], rng) -> tuple[np.ndarray, ...]:
    joined = [
        np.concatenate(parts) if len(held) > 1 else parts[0] for parts in zip(*held, strict=True)
    ]
    perm = rng.permutation(len(joined[1]))
    return tuple(a[perm] for a in joined)


def describe(shards: Sequence[Shard]) -> str:
    totals = [split_total(shards, i) for i in range(3)]
    return ", ".join(f"{n:,} {name}" for n, name in zip(totals, SPLIT_NAMES, strict=True))

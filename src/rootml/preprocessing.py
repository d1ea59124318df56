"""The preprocess stage: chunks of the plan into shards, through the shared row transform
(:mod:`.transform`).

A shard (HDF5) holds ``x`` float32 [n, dim], ``y`` int32 class index, ``split`` uint8
(0 train, 1 val, 2 test), ``entry`` int64, and attrs with the layout digest and chunk.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import awkward as ak
import numpy as np
from tqdm import tqdm

from . import __version__, reweighting
from .columns import check_matches, stores_by_basename
from .derivation import apply, from_json
from .exceptions import DataError, LayoutError
from .reading import open_input
from .sources import resolve
from .storage import atomic_path, file_checksums
from .transform import labels_for, split_of, transform

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ split assignment


# ------------------------------------------------------------------ the transform


# ------------------------------------------------------------------ the stage


def parse_chunks(text: str | Sequence[str], n_chunks: int) -> list[int]:
    """Chunk ids from "3", "0-9", "0,2,5" or "all" (or a list of such strings)."""
    parts = [text] if isinstance(text, str) else list(text)
    ids: list[int] = []
    for raw in ",".join(parts).split(","):
        part = raw.strip()
        if not part:
            continue
        if part == "all":
            ids.extend(range(n_chunks))
            continue
        try:
            lo, _, hi = part.partition("-")
            ids.extend(range(int(lo), int(hi or lo) + 1))
        except ValueError:
            raise LayoutError(f"chunk {part!r} is not a number, a range a-b, or 'all'") from None
    bad = [i for i in ids if not 0 <= i < n_chunks]
    if bad:
        raise LayoutError(f"chunk {bad[0]} is outside the plan (0-{n_chunks - 1}); see layout.json")
    return list(dict.fromkeys(ids))


def shard_name(chunk_id: int) -> str:
    return f"shard-{chunk_id:05d}.h5"


def preprocess(
    layout: dict,
    chunk_ids: Iterable[int],
    out: str | Path,
    *,
    paths: dict[str, str] | None = None,
    columns: Sequence[str | Path] = (),
    workers: int = 1,
) -> list[Path]:
    """Write one shard per chunk. ``out`` is a ``.h5`` file for a single chunk, else a folder.

    ``paths`` maps a file's basename to a local copy (from ``rootml fetch``) to read instead
    of the URL recorded in the layout. ``columns`` are staging folders written by
    ``rootml specs --columns``: a file staged there is read from them (no second
    decompression), the others from ROOT. Consecutive chunks of one file share one open
    file, and one row buffer is reused for every chunk (first-touch page faults of fresh
    memory cost as much as the transform). Writing shard images on a background thread was
    tried and measured slower: the extra copies cost more than the overlap saved.
    """
    import h5py  # only this stage writes HDF5

    chunks = [layout["chunks"][i] for i in chunk_ids]
    out = Path(out)
    single = len(chunks) == 1 and out.suffix == ".h5"
    by_file: dict[int, list[tuple[dict, Path]]] = {}
    for chunk in chunks:
        target = out if single else out / shard_name(chunk["id"])
        by_file.setdefault(chunk["file"], []).append((chunk, target))
    stores = stores_by_basename(columns)
    for file_id in by_file:
        info = layout["files"][file_id]
        if info["basename"] in stores:
            check_matches(stores[info["basename"]], info, layout["tree"])
    buffer = np.empty((max(c["stop"] - c["start"] for c in chunks), layout["dim"]), np.float32)
    written: list[Path] = []
    bar = tqdm(
        total=sum(c["stop"] - c["start"] for c in chunks),
        unit="events",
        desc="preprocess",
        disable=not sys.stderr.isatty(),
    )
    row_bytes = layout["dim"] * 4
    for file_id, items in by_file.items():
        info = layout["files"][file_id]
        location = (paths or {}).get(info["basename"], info["url"])
        store = stores.get(info["basename"])
        log.info(
            "preprocess: %s read from %s",
            info["basename"],
            f"the columns staged in {store.folder}" if store else location,
        )
        with (
            contextlib.nullcontext(store)
            if store is not None
            else open_input(
                resolve(location),
                layout["tree"],
                workers=workers,
                preprocessing=layout.get("preprocessing"),
                file_format=info.get("format"),
            )
        ) as root:
            # a span does not cut a cluster in two (each half would decompress all of it),
            # up to MAX_SPAN_BYTES of rows
            cluster = getattr(root, "largest_cluster", lambda: 0)() * row_bytes
            limit = min(max(SPAN_BYTES, cluster), MAX_SPAN_BYTES)
            for span in _spans(items, row_bytes, limit):
                lo, hi = span[0][0]["start"], span[-1][0]["stop"]
                block = root.arrays(layout["read"], lo, hi) if len(span) > 1 else None
                for chunk, target in span:
                    t0 = time.perf_counter()
                    if block is None:
                        arrays = root.arrays(layout["read"], chunk["start"], chunk["stop"])
                    else:
                        arrays = block[chunk["start"] - lo : chunk["stop"] - lo]
                    shard = _shard_arrays(arrays, layout, info, chunk, location, buffer)
                    _write_shard(h5py, target, shard, _attrs(layout, info, chunk))
                    written.append(target)
                    bar.update(chunk["stop"] - chunk["start"])
                    _log_chunk(chunk, info, shard["x"].shape, time.perf_counter() - t0, target)
    bar.close()
    return written


#: consecutive small chunks of one file are read together, up to about this many bytes of
#: rows: a read costs at least the decompression of the baskets it touches, which for tiny
#: entries hold far more than a chunk (10M 4-byte entries in 10k-entry chunks: 1,000 reads
#: of the same baskets)
SPAN_BYTES = 32 * 2**20
#: ... and at most this much, even to keep a cluster whole (memory stays bounded)
MAX_SPAN_BYTES = 256 * 2**20


def _spans(
    items: list[tuple[dict, Path]], row_bytes: int, limit: int = SPAN_BYTES
) -> list[list[tuple[dict, Path]]]:
    """``items`` (chunk, target) of one file cut into runs of consecutive chunks of at most
    ``limit`` bytes of rows (a chunk bigger than that is a run of its own)."""
    spans: list[list[tuple[dict, Path]]] = []
    rows = 0
    for chunk, target in items:
        n = chunk["stop"] - chunk["start"]
        joins = spans and spans[-1][-1][0]["stop"] == chunk["start"]
        if joins and (rows + n) * row_bytes <= limit:
            spans[-1].append((chunk, target))
            rows += n
        else:
            spans.append([(chunk, target)])
            rows = n
    return spans


def _log_chunk(chunk: dict, info: dict, shape: tuple, seconds: float, target: Path) -> None:
    rate = (chunk["stop"] - chunk["start"]) / max(seconds, 1e-9)
    log.info(
        "preprocess: chunk %d (%s %d-%d): %d rows x %d in %.2f s (%.0f events/s) -> %s",
        chunk["id"],
        info["basename"],
        chunk["start"],
        chunk["stop"],
        *shape,
        seconds,
        rate,
        target,
    )


def _shard_arrays(
    arrays: ak.Array, layout: dict, info: dict, chunk: dict, where: str, buffer: np.ndarray
) -> dict:
    entries = np.arange(chunk["start"], chunk["stop"], dtype=np.int64)
    event_weights = None
    if layout.get("derived"):
        derived = apply(from_json(layout["derived"]), arrays, layout["derived"]["collections"])
        arrays, event_weights = derived.arrays(), derived.weights
        if derived.keep is not None:
            entries = entries[derived.keep]  # the split stays a function of the entry
    x, bad = transform(arrays, layout, buffer)
    y = labels_for(arrays, layout, info["label"], where)
    w = _weights(layout, info, event_weights, len(entries), chunk, where)
    if w is not None and (layout.get("derived") or {}).get("reweight"):
        w *= _reweight(layout["derived"]["reweight"], arrays, y, layout["labels"]["classes"])
    if bad.any():
        policy = layout["nan_policy"]
        if policy == "error":
            raise DataError(
                f"{int(bad.sum())} events in entries {chunk['start']}-{chunk['stop']} hold "
                "NaN/inf that the specs did not see; rerun specs, or set nan_policy to drop or "
                f"replace\nin file {where}"
            )
        if policy == "drop":
            keep = ~bad
            x, y, entries = x[keep], y[keep], entries[keep]
            w = None if w is None else w[keep]
    split = split_of(
        info["basename"], entries, layout["seed"], layout["split"]["val"], layout["split"]["test"]
    )
    # y and entry in the narrowest type that holds them: with a few features per row they are
    # most of a shard's bytes (21 bytes a row for two float32 features, 14 so)
    shard = {"x": x, "y": _narrow(y, len(layout["labels"]["classes"]) - 1), "split": split,
             "entry": _narrow(entries, chunk["stop"])}  # fmt: skip
    if w is not None:
        shard["w"] = w
    return shard


def _narrow(values: np.ndarray, most: int) -> np.ndarray:
    """Non-negative integers up to ``most`` as int8/int16/int32 where they fit (readers
    widen them again)."""
    for dtype in (np.int8, np.int16, np.int32):
        if most <= np.iinfo(dtype).max:
            return values.astype(dtype, copy=False)
    return values


def _reweight(reweight: dict, arrays: ak.Array, y: np.ndarray, classes: list) -> np.ndarray:
    """Each row's kinematic reweighting factor: its class's factor in its bin."""
    bins = reweighting.bin_index(
        [np.asarray(ak.to_numpy(arrays[v]), dtype=np.float64) for v in reweight["variables"]],
        reweight["bins"],
    )
    table = np.stack([np.asarray(reweight["factors"][c]) for c in classes])
    return table[(y, *bins)].astype(np.float32)


def _weights(
    layout: dict, info: dict, event: np.ndarray | None, n: int, chunk: dict, where: str
) -> np.ndarray | None:
    """Each row's weight (the file's normalisation times the event's weight), for a weighted
    layout; a weight that is not finite is an error naming the entries and the expression."""
    if not layout.get("weighted"):
        return None
    w = np.full(n, info.get("weight", 1.0), dtype=np.float64)
    if event is not None:
        w *= event
    bad = ~np.isfinite(w)
    if bad.any():
        expr = layout["derived"].get("weight") if layout.get("derived") else None
        raise DataError(
            f"{int(bad.sum())} events in entries {chunk['start']}-{chunk['stop']} have a weight "
            f"that is not finite (weight: {expr!r}); fix the expression (where(..., ..., 0) "
            f"guards a division) or select those events away\nin file {where}"
        )
    return w.astype(np.float32)


def _attrs(layout: dict, info: dict, chunk: dict) -> dict:
    return {
        "layout_digest": layout["digest"],
        "rootml_version": __version__,
        "chunk": chunk["id"],
        "file": info["basename"],
        "start": chunk["start"],
        "stop": chunk["stop"],
        "dim": layout["dim"],
    }


def _write_shard(h5py, target: Path, shard: dict, attrs: dict) -> None:
    """Write one shard under a temporary name and rename it into place when complete, then its
    record (size, checksums, rows: what the steps that read it verify)."""
    from .shards import write_shard_record

    with atomic_path(target) as tmp:
        with h5py.File(tmp, "w") as h5:
            for name, data in shard.items():
                h5.create_dataset(name, data=data)
            h5.attrs.update(attrs)
        size, sums = tmp.stat().st_size, file_checksums(tmp)  # still in the page cache
    write_shard_record(target, size, sums, len(shard["y"]), attrs)

"""The row transform every part shares: entries of a ROOT file (or a client's events) into
fixed-width float32 rows, and each entry's split.

The transform is column-wise: each flat branch is one scaled column; each jagged branch is
``cap`` columns filled from its flattened content with NumPy fancy indexing (objects beyond
the cap are dropped, missing ones get the padding value). No Python loop runs over events.
The same arithmetic (float32 ``(x - shift) * scale``, then clip, then pad) is what the
exported model does, so served predictions match the shards. The constants come from the
layout (:mod:`.layout`); the preprocess stage (:mod:`.preprocessing`), training, scoring,
the bundle and the server all use this module, and it imports no stage.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .exceptions import DataError, format_closest

if TYPE_CHECKING:
    import awkward as ak  # imported where arrays are read: training and the bundle need none

TRAIN, VAL, TEST = 0, 1, 2


SPLIT_NAMES = ("train", "val", "test")


# ------------------------------------------------------------------ split assignment


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser on uint64 arrays (wrap-around arithmetic is intended)."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def split_of(basename: str, entries: np.ndarray, seed: int, val: float, test: float) -> np.ndarray:
    """Train/val/test (0/1/2) for each entry of a file, from a hash of (seed, file, entry).

    It depends only on the file name, the entry number and the seed, so re-runs, other chunk
    sizes and other ``nevts`` put an event in the same split.
    """
    key = int.from_bytes(hashlib.sha256(f"{seed}:{basename}".encode()).digest()[:8], "little")
    with np.errstate(over="ignore"):
        h = _splitmix64(np.asarray(entries, dtype=np.uint64) + np.uint64(key))
    u = (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
    out = np.full(u.shape, TRAIN, dtype=np.uint8)
    out[u >= 1.0 - test - val] = VAL
    out[u >= 1.0 - test] = TEST
    return out


# ------------------------------------------------------------------ the transform


def column_constants(layout: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per-column float32 ``shift`` and ``scale`` of the raw feature vector."""
    dim = layout["dim"]
    shift = np.zeros(dim, dtype=np.float32)
    scale = np.ones(dim, dtype=np.float32)
    for col in layout["inputs"]:
        sl = slice(col["offset"], col["offset"] + col["width"])
        shift[sl], scale[sl] = col["shift"], col["scale"]
    lo = layout["clip"][0]
    for extra in layout["extras"]:
        if extra["kind"] == "count":
            shift[extra["offset"]], scale[extra["offset"]] = count_shift(extra, lo), extra["scale"]
    return shift, scale


def count_shift(extra: dict, lo: float) -> float:
    """The shift that maps an object count n to ``n * scale + lo`` in the shift/scale form."""
    return -lo / extra["scale"]


def _scaled(values: np.ndarray, shift: float, scale: float, lo: float, hi: float) -> np.ndarray:
    """float32 ``clip((x - shift) * scale, lo, hi)`` in a new array (NaN stays NaN, but an
    infinity is clipped: find non-finite values with :func:`_nonfinite` on the input)."""
    v = values.astype(np.float32)  # always a copy
    with np.errstate(invalid="ignore"):  # inf * 0 on a constant column: NaN, flagged anyway
        v -= np.float32(shift)
        v *= np.float32(scale)
    np.clip(v, np.float32(lo), np.float32(hi), out=v)
    return v


def _nonfinite(raw: np.ndarray) -> np.ndarray | None:
    """Where ``raw`` (values before scaling) is NaN or +-inf, or None when it is all finite."""
    if raw.dtype.kind != "f":
        return None
    mask = ~np.isfinite(raw)
    return mask if mask.any() else None


def present(column) -> tuple[np.ndarray, np.ndarray | None]:
    """The values of a flat awkward column as NumPy, and where some are missing (a record
    file's field absent from some records: an option type) a bool array of those that are
    there, else None; a missing value is 0 in the values."""
    import awkward as ak

    values = ak.to_numpy(column)
    if not np.ma.isMaskedArray(values):
        return np.asarray(values), None
    there = ~np.ma.getmaskarray(values)
    return values.filled(0), (None if there.all() else there)


def _gather_index(counts: np.ndarray, width: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """For events with ``counts`` objects, capped at ``width``: where each kept object sits in
    the flattened content (``src``) and in the flattened row-major ``x`` (``dst``, offset 0).

    Built slot by slot (the first object of every event, then the second of those with two
    or more, ...): the loop runs over at most ``width`` slots, never over events. While most
    events still hold objects a slot is one comparison over all of them (measured 2.5x
    faster than ``np.repeat`` of per-event ranges); once fewer than a quarter do, only those
    are followed, so a wide cap on a sparse collection costs the kept objects, not
    ``width`` passes over every event.
    """
    starts = np.cumsum(counts) - counts  # where each event's objects begin in the content
    src: list[np.ndarray] = []
    dst: list[np.ndarray] = []
    followed: tuple[np.ndarray, np.ndarray] | None = None  # (events, their counts)
    for slot in range(width):
        if followed is None:
            events = np.flatnonzero(counts > slot)
            if 4 * events.size < counts.size:
                followed = events, counts[events]
        else:
            keep = followed[1] > slot
            events = followed[0][keep]
            followed = events, followed[1][keep]
        if events.size == 0:
            break
        src.append(starts[events] + slot)
        dst.append(events * dim + slot)
    empty = np.zeros(0, dtype=np.int64)
    return (np.concatenate(src), np.concatenate(dst)) if src else (empty, empty)


def _category_raw(column, col: dict) -> np.ndarray:
    """A string column's raw values (rootml.categories): [n, K+1] 0/1 flags (one-hot, the
    last for 'other') or [n, 1] codes (index; 'other' is K)."""
    from .categories import codes

    code = codes(column, col["values"])
    if col["encoding"] == "index":
        return code[:, None].astype(np.float32)
    flags = np.zeros((code.size, col["width"]), dtype=np.float32)
    flags[np.arange(code.size), code] = 1.0
    return flags


def transform(
    arrays: ak.Array, layout: dict, out: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Rows for ``arrays`` (a record array holding ``layout['read']``).

    ``out``, a float32 [m >= n, dim] buffer, is reused for the rows when given: fresh memory
    costs a page fault per 4 KiB on first touch, which dominates at hundreds of MB per chunk.

    Returns ``x`` (float32 [n, dim]) and ``bad`` (bool [n], events holding a NaN/inf in a
    used value). Under ``nan_policy: replace`` non-finite values become the padding value;
    under ``drop`` the caller drops ``bad`` rows; under ``error`` the caller raises.
    """
    import awkward as ak

    n, dim = len(arrays), layout["dim"]
    lo, hi = layout["clip"]
    pad = np.float32(layout["pad_value"])
    x = np.empty((n, dim), dtype=np.float32) if out is None else out[:n]
    x.fill(pad)
    flat_x = x.reshape(-1)
    bad = np.zeros(n, dtype=bool)
    lengths: dict[str, np.ndarray] = {}
    index: dict[tuple[str, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for col in layout["inputs"]:
        column = arrays[col["branch"]]
        off, width = col["offset"], col["width"]
        if col["kind"] == "category":
            x[:, off : off + width] = _scaled(
                _category_raw(column, col), col["shift"], col["scale"], lo, hi
            )
            continue
        if col["kind"] == "flat":
            raw, there = present(column)
            v = _scaled(raw, col["shift"], col["scale"], lo, hi)
            nonfinite = _nonfinite(raw)
            if nonfinite is not None:
                bad |= nonfinite
                v[nonfinite] = pad
            if there is not None:  # a value missing from its record is padded, as an object
                v[~there] = pad
            x[:, off] = v
            continue
        counts = np.asarray(ak.num(column, axis=1), dtype=np.int64)
        lengths[col["branch"]] = counts
        key = (col["collection"], width)
        cached = index.get(key)
        if cached is None or not np.array_equal(cached[0], counts):
            cached = index[key] = (counts, *_gather_index(counts, width, dim))
        _, src, dst = cached
        content, there = present(ak.flatten(column, axis=1))
        picked = content[src]
        values = _scaled(picked, col["shift"], col["scale"], lo, hi)
        nonfinite = _nonfinite(picked)
        if nonfinite is not None:
            bad[dst[nonfinite] // dim] = True
            values[nonfinite] = pad
        if there is not None:  # an object without this field: padded, as a missing object
            values[~there[src]] = pad
        flat_x[dst + off] = values
    for extra in layout["extras"]:
        counts = lengths[extra["branch"]]
        off, width = extra["offset"], extra["width"]
        if extra["kind"] == "count":
            x[:, off] = _scaled(counts, count_shift(extra, lo), extra["scale"], lo, hi)
        else:
            x[:, off : off + width] = (np.arange(width) < counts[:, None]).astype(np.float32)
    return x, bad


def scale_rows(raw: np.ndarray, layout: dict) -> np.ndarray:
    """NumPy twin of the exported graph: raw feature rows to model inputs."""
    shift, scale = column_constants(layout)
    lo, hi = layout["clip"]
    with np.errstate(invalid="ignore"):
        z = (raw.astype(np.float32) - shift) * scale
        np.clip(z, np.float32(lo), np.float32(hi), out=z)
    z[~np.isfinite(raw)] = np.float32(layout["pad_value"])
    return z


def unscale_rows(x: np.ndarray, layout: dict) -> np.ndarray:
    """Approximate raw rows for scaled rows (padding becomes NaN): reference inputs."""
    shift, scale = column_constants(layout)
    raw = x.astype(np.float64) / scale + shift
    raw[x == np.float32(layout["pad_value"])] = np.nan
    return raw.astype(np.float32)


def raw_rows(arrays: ak.Array, layout: dict) -> np.ndarray:
    """The RAW feature rows of ``arrays``: physics values in the layout's column order, NaN
    for missing objects, object counts and 0/1 masks for the extras. ``scale_rows`` turns them
    into exactly what :func:`transform` writes (this is what a served model receives).

    A layout with object selections and new variables gets them applied first; its event
    selection does not apply: every event given is scored."""
    import awkward as ak

    if layout.get("derived"):
        from .derivation import apply, from_json

        derived = layout["derived"]
        arrays = apply(from_json(derived), arrays, derived["collections"], select=False).arrays()
    n, dim = len(arrays), layout["dim"]
    raw = np.full((n, dim), np.nan, dtype=np.float32)
    flat_raw = raw.reshape(-1)
    lengths: dict[str, np.ndarray] = {}
    for col in layout["inputs"]:
        column = arrays[col["branch"]]
        if col["kind"] == "category":
            raw[:, col["offset"] : col["offset"] + col["width"]] = _category_raw(column, col)
            continue
        if col["kind"] == "flat":
            values, there = present(column)
            raw[:, col["offset"]] = values
            if there is not None:  # missing from the record: NaN, which scaling pads
                raw[~there, col["offset"]] = np.nan
            continue
        counts = np.asarray(ak.num(column, axis=1), dtype=np.int64)
        lengths[col["branch"]] = counts
        src, dst = _gather_index(counts, col["width"], dim)
        content, there = present(ak.flatten(column, axis=1))
        picked = content[src].astype(np.float32)
        if there is not None:
            picked[~there[src]] = np.nan
        flat_raw[dst + col["offset"]] = picked
    for extra in layout["extras"]:
        counts = lengths[extra["branch"]]
        off, width = extra["offset"], extra["width"]
        if extra["kind"] == "count":
            raw[:, off] = counts
        else:
            raw[:, off : off + width] = np.arange(width) < counts[:, None]
    return raw


def events_to_raw(events: Sequence[dict], layout: dict, absent_ok: bool = False) -> np.ndarray:
    """Raw feature rows for events given by branch name, as a client sends them:
    ``{"HT": 512.0, "Jet_pt": [120.5, 64.2], ...}``. Lists longer than the cap are truncated
    and shorter ones padded, exactly as in training. A null value (or a null in a list) is
    missing and padded, as a record file's missing value is in training; a null list is an
    empty one. With ``absent_ok`` (records, as a record file's reader takes them) a branch
    may also be absent, which is the same as null."""
    import awkward as ak

    names, kinds = event_branches(layout)
    columns: dict[str, list] = {n: [] for n in names}
    for i, event in enumerate(events):
        if not isinstance(event, dict):
            raise DataError(
                f"event {i} must be an object of branch: value, got {type(event).__name__}"
            )
        unknown = sorted(set(event) - set(names))
        if unknown:
            raise DataError(
                f"event {i} has unknown branch {unknown[0]!r} "
                f"({format_closest(unknown[0], names)}); the model takes: {', '.join(names)}"
            )
        for name in names:
            if name not in event and not absent_ok:
                raise DataError(
                    f"event {i} lacks branch {name!r}; the model takes: {', '.join(names)}"
                )
            value = event.get(name)
            if kinds.get(name) == "category":
                if value is not None and not isinstance(value, str):
                    raise DataError(
                        f"event {i}: {name!r} must be a string (one of the values it was "
                        f"trained on; any other counts as 'other'), got {value!r}"
                    )
                columns[name].append(value)
            elif kinds.get(name, "jagged") == "jagged":
                value = [] if value is None else value
                if not isinstance(value, list) or not all(
                    _is_number(v) or v is None for v in value
                ):
                    raise DataError(
                        f"event {i}: {name!r} must be a list of numbers (one per object)"
                    )
                columns[name].append([np.nan if v is None else float(v) for v in value])
            elif value is None:
                columns[name].append(np.nan)
            else:
                if not _is_number(value):
                    raise DataError(f"event {i}: {name!r} must be a number, got {value!r}")
                columns[name].append(float(value))
    arrays = ak.Array(
        {
            n: ak.Array(v)
            if kinds.get(n, "jagged") in ("jagged", "category")
            else np.asarray(v, np.float64)
            for n, v in columns.items()
        }
    )
    return raw_rows(arrays, layout)


def event_branches(layout: dict) -> tuple[list[str], dict[str, str]]:
    """The branches a named event must give (features on disk, and what the object selections
    and new variables read; not what only the event selection reads), and each one's kind."""
    names = [n for n in layout["read"] if n != layout["labels"]["branch"]]
    kinds = {c["branch"]: c["kind"] for c in layout["inputs"]}
    derived = layout.get("derived")
    if not derived:
        return names, kinds
    from .derivation import Derivation, from_json

    parsed = from_json(derived)
    scored = Derivation(None, parsed.object_cuts, parsed.variables)
    wanted = {c["branch"] for c in layout["inputs"]} | set(scored.needs())
    kinds.update(dict.fromkeys(derived["collections"], "jagged"))
    return [n for n in names if n in wanted], {n: kinds.get(n, "flat") for n in names}


def _is_number(value) -> bool:
    return isinstance(value, (int, float))  # bool flags count as 0/1


def labels_for(arrays: ak.Array, layout: dict, file_label: int | None, where: str) -> np.ndarray:
    """Class indices: the file's label, or the label branch mapped onto the class list."""
    import awkward as ak

    n = len(arrays)
    if file_label is not None:
        return np.full(n, file_label, dtype=np.int32)
    branch = layout["labels"]["branch"]
    if layout["labels"].get("encoding") == "category":  # class names: strings
        from .categories import as_strings, codes

        classes = layout["labels"]["classes"]
        idx = codes(arrays[branch], classes)
        if (idx == len(classes)).any():
            names = as_strings(arrays[branch]).to_pylist()  # None: a record without one
            unseen = sorted(
                {v for v, i in zip(names, idx, strict=True) if i == len(classes)}, key=str
            )
            raise DataError(
                f"label field {branch!r} holds {unseen[:5]} which the specs did not see "
                f"(classes {classes}); rerun specs and merge on these files\nin file {where}"
            )
        return idx.astype(np.int32)
    values = np.asarray(ak.to_numpy(arrays[branch])).astype(np.int64)
    classes = np.array([int(c) for c in layout["labels"]["classes"]], dtype=np.int64)
    idx = np.searchsorted(classes, values)
    idx = np.clip(idx, 0, classes.size - 1)
    unknown = classes[idx] != values
    if unknown.any():
        raise DataError(
            f"label branch {branch!r} holds {sorted(set(values[unknown].tolist()))[:5]} which "
            f"the specs did not see (classes {layout['labels']['classes']}); rerun specs and "
            f"merge on these files\nin file {where}"
        )
    return idx.astype(np.int32)

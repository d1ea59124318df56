"""Staged columns: the branches of one file, decompressed once, kept for preprocess.

``specs`` has to decompress every basket of the branches it scans; ``preprocess`` then needs
the same values again. Reading the ROOT file twice costs two decompressions, so the pipeline
could never run faster than half the speed of a plain read. With ``rootml specs --columns DIR``
the scan also writes each branch's values as they come out of the decoder (plain
little-endian arrays, one file per branch, plus int64 offsets for jagged branches, and for a
record field missing from some records a uint8 array saying which values are there), and
``rootml preprocess --columns DIR`` reads entry ranges back with one ``pread`` per array:
no decompression, memory bounded by the chunk.

A folder holds ``columns.json`` (the manifest: source file, its size and sha256 when known,
tree, entries, and per branch its kind, dtype and data files) and the arrays. It is written
under a temporary name and renamed when complete; :func:`open_columns` checks every array's
length against the manifest, and :func:`check_matches` the manifest against the layout's file,
so a stale or truncated staging is an error, never silently different data. Each array has a
sidecar of block checksums (XXH3-64 of every 64 KiB, computed as the values are written):
a read checks the blocks it touches, so a flipped byte is an error naming the array, at the
cost of hashing what is read (~9 GB/s) plus at most two blocks per array and read. (No
sha256 here: hashing every staged byte at ~1.6 GB/s would slow the specs step that writes
them by more than the check is worth; the source file's sha256 is in the manifest.)

On disk a staging takes the decompressed size of the scanned branches (jagged ones unpadded),
usually less than the shards made from it.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import awkward as ak
import numpy as np

from . import __version__
from .categories import LocalDictionary, decode
from .exceptions import ConfigError, DataError, LayoutError
from .schemas import validate
from .storage import read_json, temporary_folder, write_json

if TYPE_CHECKING:
    from typing_extensions import Self

SCHEMA_ID = "https://rootml.invalid/schemas/columns/1"
MANIFEST = "columns.json"
FILE_KEYS = ("basename", "url", "size", "sha256")  # what a manifest records of its source
_OFFSET = np.dtype("<i8")
BLOCK = 1 << 16  # bytes per checksum block
CHECKSUMS = {"algorithm": "xxh3_64", "block_bytes": BLOCK}
_DIGEST = np.dtype("<u8")


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".xxh3")


class _BlockHasher:
    """XXH3-64 of each :data:`BLOCK` bytes of a file written by appends."""

    def __init__(self) -> None:
        import xxhash

        self._new = xxhash.xxh3_64
        self._current = self._new()
        self._filled = 0
        self.digests: list[int] = []

    def update(self, data: memoryview) -> None:
        data = data.cast("B")
        while len(data):
            take = min(BLOCK - self._filled, len(data))
            self._current.update(data[:take])
            self._filled += take
            data = data[take:]
            if self._filled == BLOCK:
                self.digests.append(self._current.intdigest())
                self._current, self._filled = self._new(), 0

    def finish(self) -> np.ndarray:
        if self._filled:
            self.digests.append(self._current.intdigest())
            self._current, self._filled = self._new(), 0
        return np.asarray(self.digests, dtype=_DIGEST)


@dataclass(frozen=True)
class _Branch:
    kind: str  # "flat", "jagged" or "category"
    dtype: np.dtype  # of the values, little-endian
    values: Path
    offsets: Path | None  # jagged only: entries + 1 int64 offsets into values
    categories: list[str] | None = None  # category only: what the int32 codes index
    valid: Path | None = None  # a uint8 per value, 0 where a record had none (records only)


class ColumnWriter:
    """Append the values of ``branches`` step by step; :meth:`commit` makes the folder.

    Use as a context manager: leaving the block with an exception (or without a commit)
    deletes the temporary folder, so nothing half-written is left under ``out``.
    """

    def __init__(self, out: str | Path, kinds: dict[str, str]):
        self.out = Path(out)
        _check_replaceable(self.out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = temporary_folder(self.out)
        self._kinds = dict(kinds)
        self._dtypes: dict[str, np.dtype] = {}
        self._rows = dict.fromkeys(kinds, 0)
        self._total = dict.fromkeys(kinds, 0)  # jagged: objects written so far
        self._written = dict.fromkeys(kinds, 0)  # values written so far
        # no handle is kept open between steps: a NanoAOD file has over a thousand branches,
        # more than the usual limit of open files
        self._paths: dict[tuple[str, str], Path] = {}
        self._hashers: dict[tuple[str, str], _BlockHasher] = {}
        # a category's strings are staged as int32 codes into the file's own dictionary
        self._dictionaries = {n: LocalDictionary() for n, k in kinds.items() if k == "category"}
        self._unstaged: set[str] = set()
        for i, (name, kind) in enumerate(kinds.items()):
            self._paths[name, "values"] = self._tmp / f"{i:04d}.values"
            self._paths[name, "values"].touch()
            self._hashers[name, "values"] = _BlockHasher()
            if kind == "jagged":
                self._paths[name, "offsets"] = self._tmp / f"{i:04d}.offsets"
                self._hashers[name, "offsets"] = _BlockHasher()
                self._append(name, "offsets", np.zeros(1, _OFFSET), mode="wb")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)

    def add(
        self,
        name: str,
        values: np.ndarray,
        counts: np.ndarray | None = None,
        valid: np.ndarray | None = None,
    ) -> None:
        """Append one step of branch ``name``: its values (for a jagged branch the flattened
        content; a category's strings), for a jagged branch the number of objects per event,
        and, where some values are missing (a record field), which are there (``valid``)."""
        if name in self._unstaged:
            return
        if name in self._dictionaries:
            values = self._dictionaries[name].encode(values)
            if values is None:
                # an identifier (a file name, a UUID), which merge drops: not staged, and
                # not left to grow a dictionary as large as the file
                self._unstaged.add(name)
                self._dictionaries.pop(name)
                return
        dtype = values.dtype.newbyteorder("<")
        known = self._dtypes.setdefault(name, dtype)
        if known != dtype:
            raise DataError(f"branch {name!r} changed type from {known} to {dtype} mid-file")
        self._add_valid(name, values.size if valid is None else valid)
        self._append(name, "values", np.ascontiguousarray(values, dtype))
        self._written[name] += values.size
        if counts is None:
            self._rows[name] += values.size
            return
        self._append(name, "offsets", np.cumsum(counts, dtype=_OFFSET) + self._total[name])
        self._total[name] += values.size
        self._rows[name] += counts.size

    def _add_valid(self, name: str, valid: np.ndarray | int) -> None:
        """Record which of the next values are there: ``valid`` (bool), or a count of
        values that all are. The array starts with the first missing value (the values
        before it all there); a branch that never misses one has none."""
        if (name, "valid") not in self._paths:
            if isinstance(valid, int) or valid.all():
                return
            self._paths[name, "valid"] = self._paths[name, "values"].with_suffix(".valid")
            self._hashers[name, "valid"] = _BlockHasher()
            self._append(name, "valid", np.ones(self._written[name], np.uint8), mode="wb")
        there = np.ones(valid, np.uint8) if isinstance(valid, int) else valid.astype(np.uint8)
        self._append(name, "valid", there)

    def _append(self, name: str, part: str, array: np.ndarray, mode: str = "ab") -> None:
        data = memoryview(array)
        with open(self._paths[name, part], mode) as handle:
            handle.write(data)
        self._hashers[name, part].update(data)

    def commit(self, entries: int, file: dict, tree: str) -> dict:
        """Check every branch holds ``entries`` events, write the manifest, rename into place;
        return the manifest.

        ``file`` describes the source: basename, url, size and sha256 (None when unknown);
        other keys are not recorded.
        """
        for name in self._unstaged:  # what it held before it grew too many values goes
            self._paths.pop((name, "values")).unlink()
            self._hashers.pop((name, "values"))
            self._kinds.pop(name)
            self._rows.pop(name)
        short = {n: r for n, r in self._rows.items() if r != entries}
        if short:
            name, rows = next(iter(short.items()))
            raise DataError(
                f"staged {rows} events of branch {name!r} but the tree has {entries}\n"
                f"in file {file['url']}"
            )
        for key, hasher in self._hashers.items():
            hasher.finish().tofile(_sidecar(self._paths[key]))
        branches = {}
        for name, kind in self._kinds.items():
            entry = {"kind": kind, "dtype": self._dtypes.get(name, np.dtype("<f4")).str}
            entry["values"] = self._paths[name, "values"].name
            if kind == "jagged":
                entry["offsets"] = self._paths[name, "offsets"].name
            if (name, "valid") in self._paths:
                entry["valid"] = self._paths[name, "valid"].name
            if kind == "category":
                entry["dtype"] = "<i4"
                entry["categories"] = self._dictionaries[name].values
            branches[name] = entry
        doc = {
            "schema": SCHEMA_ID,
            "rootml_version": __version__,
            "file": {k: file[k] for k in FILE_KEYS},
            "tree": tree,
            "entries": entries,
            "bytes": sum(p.stat().st_size for p in self._tmp.iterdir()),
            "checksums": CHECKSUMS,
            "branches": branches,
        }
        validate(doc, "columns", where=f"the staged columns of {file['url']}")
        write_json(self._tmp / MANIFEST, doc)
        if self.out.exists():
            shutil.rmtree(self.out)
        self._tmp.rename(self.out)
        return doc


def _check_replaceable(out: Path) -> None:
    """A staging replaces only an earlier staging or an empty folder, never other files."""
    if not out.exists() and not out.is_symlink():
        return
    real_dir = out.is_dir() and not out.is_symlink()
    if real_dir and ((out / MANIFEST).is_file() or not any(out.iterdir())):
        return
    raise ConfigError(
        f"--columns {out}: it exists and is not an earlier staging (no {MANIFEST}); "
        "give a new folder, or remove this one first"
    )


class ColumnStore:
    """A committed staging folder, read by entry range. Use :func:`open_columns`."""

    def __init__(self, folder: Path, doc: dict):
        self.folder = folder
        self.doc = doc
        self._checked = "checksums" in doc  # stagings of before the checksums: sizes only
        self._digests: dict[Path, np.ndarray] = {}
        self.entries: int = doc["entries"]
        self.basename: str = doc["file"]["basename"]
        self._branches = {
            name: _Branch(
                b["kind"],
                np.dtype(b["dtype"]),
                folder / b["values"],
                folder / b["offsets"] if "offsets" in b else None,
                b.get("categories"),
                folder / b["valid"] if "valid" in b else None,
            )
            for name, b in doc["branches"].items()
        }

    @property
    def names(self) -> list[str]:
        return list(self._branches)

    def check_sizes(self) -> None:
        """Raise LayoutError unless every array holds as many values as the manifest says."""
        for branch in self._branches.values():
            objects = self.entries
            if branch.offsets is not None:
                _expect_size(branch.offsets, (self.entries + 1) * _OFFSET.itemsize, self.folder)
                objects = int(_pread(branch.offsets, _OFFSET, self.entries, 1)[0])
            _expect_size(branch.values, objects * branch.dtype.itemsize, self.folder)
            if branch.valid is not None:
                _expect_size(branch.valid, objects, self.folder)

    def arrays(self, names: Sequence[str], start: int, stop: int) -> ak.Array:
        """Entries [start, stop) of ``names`` as a record array, like RootInput.arrays."""
        missing = [n for n in names if n not in self._branches]
        if missing:
            raise LayoutError(
                f"branch {missing[0]!r} was not staged (staged: {', '.join(self.names)});\n"
                "rerun 'rootml specs --columns' with the same selection as the merge, or leave "
                f"--columns out to read the ROOT file\nin folder {self.folder}"
            )
        return ak.zip({n: self._read(self._branches[n], start, stop) for n in names}, depth_limit=1)

    def _read(self, branch: _Branch, start: int, stop: int) -> ak.Array:
        if branch.categories is not None:
            local = self._pread(branch.values, branch.dtype, start, stop - start)
            return ak.from_arrow(decode(local, branch.categories))
        if branch.offsets is None:
            return ak.Array(self._content(branch, start, stop - start))
        offsets = self._pread(branch.offsets, _OFFSET, start, stop - start + 1)
        content = self._content(branch, int(offsets[0]), int(offsets[-1] - offsets[0]))
        layout = ak.contents.ListOffsetArray(ak.index.Index64(offsets - offsets[0]), content)
        return ak.Array(layout)

    def _content(self, branch: _Branch, first: int, count: int) -> ak.contents.Content:
        """Values [first, first + count) of a branch; missing ones None (an option type)."""
        values = ak.contents.NumpyArray(self._pread(branch.values, branch.dtype, first, count))
        if branch.valid is None:
            return values
        there = self._pread(branch.valid, np.dtype(np.uint8), first, count).view(np.int8)
        return ak.contents.ByteMaskedArray(ak.index.Index8(there), values, valid_when=True)

    def _pread(self, path: Path, dtype: np.dtype, first: int, count: int) -> np.ndarray:
        """``count`` values from value ``first`` on, the checksum blocks they touch verified."""
        if not self._checked:
            return _pread(path, dtype, first, count)
        a, b = first * dtype.itemsize, (first + count) * dtype.itemsize
        lo, hi = a // BLOCK, -(-b // BLOCK)
        data = bytearray((hi - lo) * BLOCK)  # writable: the array is a view, not a copy
        with open(path, "rb") as handle:
            handle.seek(lo * BLOCK)
            n = handle.readinto(data)
        self._verify(path, lo, memoryview(data)[:n])
        return np.frombuffer(data, dtype=dtype, count=count, offset=a - lo * BLOCK)

    def _verify(self, path: Path, first_block: int, data: memoryview) -> None:
        import xxhash

        digests = self._digests.get(path)
        if digests is None:
            digests = self._digests[path] = _read_digests(path, self.folder)
        for i in range(-(-len(data) // BLOCK)):
            block = first_block + i
            got = xxhash.xxh3_64_intdigest(data[i * BLOCK : (i + 1) * BLOCK])
            if block >= len(digests) or got != int(digests[block]):
                raise LayoutError(
                    f"staged array {path.name} differs from its checksums at byte "
                    f"{block * BLOCK:,} (block {block}): the staging is damaged; rerun "
                    f"'rootml specs --columns' for this file\nin folder {self.folder}"
                )


def _read_digests(path: Path, folder: Path) -> np.ndarray:
    sidecar = _sidecar(path)
    size = path.stat().st_size
    expected = -(-size // BLOCK)
    if not sidecar.is_file() or sidecar.stat().st_size != expected * _DIGEST.itemsize:
        raise LayoutError(
            f"staged array {path.name} has no complete checksum file {sidecar.name}: the "
            f"staging is damaged; rerun 'rootml specs --columns' for this file\nin folder {folder}"
        )
    return np.fromfile(sidecar, dtype=_DIGEST)


def _pread(path: Path, dtype: np.dtype, first: int, count: int) -> np.ndarray:
    return np.fromfile(path, dtype=dtype, count=count, offset=first * dtype.itemsize)


def open_columns(folder: str | Path) -> ColumnStore:
    """Open a staging folder and check that every array has the length the manifest says."""
    folder = Path(folder)
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise LayoutError(
            f"no {MANIFEST} in {folder}: not a staging folder, or its 'rootml specs --columns' "
            "did not finish; rerun specs for this file"
        )
    doc = read_json(manifest)
    validate(doc, "columns", where=f"file {manifest}")
    store = ColumnStore(folder, doc)
    store.check_sizes()
    return store


def _expect_size(path: Path, size: int, folder: Path) -> None:
    actual = path.stat().st_size if path.is_file() else -1
    if actual != size:
        raise LayoutError(
            f"staged array {path.name} holds {actual} bytes, the manifest says {size}: the "
            f"staging is damaged; rerun 'rootml specs --columns' for this file\nin folder {folder}"
        )


def check_matches(store: ColumnStore, info: dict, tree: str) -> None:
    """Raise LayoutError unless ``store`` was staged from the layout's file ``info``."""
    staged = store.doc["file"]
    problems = []
    if store.doc["tree"] != tree:
        problems.append(f"tree {store.doc['tree']!r}, the layout reads {tree!r}")
    if store.entries != info["entries"]:
        problems.append(f"{store.entries} entries, the layout's file has {info['entries']}")
    for key in ("sha256", "size"):
        if staged.get(key) is not None and info.get(key) is not None and staged[key] != info[key]:
            problems.append(f"{key} {staged[key]}, the layout's file has {info[key]}")
    if problems:
        raise LayoutError(
            f"the columns staged in {store.folder} are not those of {info['basename']}: "
            f"{'; '.join(problems)};\nrerun 'rootml specs --columns' on the file the layout "
            f"was merged from, or leave --columns out\nin file {info['url']}"
        )


def stores_by_basename(folders: Sequence[str | Path]) -> dict[str, ColumnStore]:
    """Open staging folders, keyed by the basename of the file each was staged from."""
    stores: dict[str, ColumnStore] = {}
    for folder in folders:
        store = open_columns(folder)
        if store.basename in stores:
            raise LayoutError(
                f"two staging folders for {store.basename}: {stores[store.basename].folder} "
                f"and {store.folder}; give one per input file"
            )
        stores[store.basename] = store
    return stores

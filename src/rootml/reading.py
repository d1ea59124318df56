"""The reading layer: the only module that imports uproot.

It opens a TTree or RNTuple (local, ``file://``, ``http(s)://``, ``root://``), describes its
branches (flat, jagged, or unsupported with the reason) and reads column ranges as awkward
arrays. Every uproot or I/O failure leaves here as an :class:`~rootml.exceptions.InputFileError`
naming the file, so the stages above never see a bare ``ValueError`` from deep in uproot.

RNTuple fields that are collections of records (``Jet: var * {pt, eta}``) or records
(``three_LV: {pt, eta}``) are exposed as one branch per leaf, named ``Jet.pt``, ``three_LV.pt``,
like TTree's ``Jet_pt``. A TTree's split objects (Delphes's and Bacon's ``TClonesArray``
collections, split classes) are exposed the same way: each numeric sub-branch under its full
name (``Jet.PT``; a struct member ``I16`` of ``evt`` as ``evt.I16``), jagged per object as the
collection is. A collection's own top-level branch holds its object count: it is marked
(:attr:`BranchInfo.counter_of`) and is a feature only when selected by name.
"""

from __future__ import annotations

import itertools
import logging
import math
import zlib
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import awkward as ak
import numpy as np
import uproot

from .exceptions import (
    BranchError,
    ConfigError,
    InputFileError,
    TreeNotFoundError,
    format_closest,
)
from .hooks import load_hook
from .sources import Source, record_format, resolve

if TYPE_CHECKING:
    from typing_extensions import Self

log = logging.getLogger(__name__)

FLAT, JAGGED, UNSUPPORTED = "flat", "jagged", "unsupported"
#: a string field of a record file, one value per record (rootml.categories)
CATEGORY = "category"
#: TNtuple and TNtupleD are TTrees of float / double columns
TREE_CLASSES = ("TTree", "TNtuple", "TNtupleD", "ROOT::RNTuple", "ROOT::Experimental::RNTuple")

# what uproot and the codecs raise for unreadable bytes
_READ_ERRORS = (
    OSError,
    ValueError,
    EOFError,
    zlib.error,
    uproot.deserialization.DeserializationError,
    TimeoutError,
)


@dataclass(frozen=True)
class BranchInfo:
    """What one branch holds, as far as rootml is concerned."""

    name: str
    kind: str  # FLAT, JAGGED, CATEGORY or UNSUPPORTED
    dtype: str | None = None  # numpy name of the leaf type: float32, int64, bool, ...
    collection: str | None = None  # jagged branches of one collection share it ("Jet")
    fixed_length: int | None = None  # for fixed-size arrays such as float[3]
    reason: str | None = None  # why a branch is UNSUPPORTED
    typename: str | None = None  # the C++ type as ROOT names it, where known
    counter_of: str | None = None  # a split collection whose object count this branch holds


def classify(name: str, form: ak.forms.Form) -> BranchInfo:
    """Classify one branch from its awkward form (pure; no I/O)."""
    params = form.parameters or {}
    if params.get("__array__") in ("string", "bytestring"):
        return BranchInfo(name, UNSUPPORTED, reason="strings cannot be features")
    if isinstance(form, ak.forms.NumpyForm):
        if form.inner_shape:
            if len(form.inner_shape) > 1:
                return BranchInfo(name, UNSUPPORTED, reason="multi-dimensional fixed array")
            return BranchInfo(
                name, JAGGED, form.primitive, collection_of(name), int(form.inner_shape[0])
            )
        return BranchInfo(name, FLAT, form.primitive)
    if isinstance(form, ak.forms.RegularForm):
        inner = classify(name, form.content)
        if inner.kind != FLAT:
            return BranchInfo(name, UNSUPPORTED, reason="nested fixed-size arrays")
        return BranchInfo(name, JAGGED, inner.dtype, collection_of(name), int(form.size))
    if isinstance(form, (ak.forms.ListOffsetForm, ak.forms.ListForm)):
        inner = classify(name, form.content)
        if inner.kind != FLAT:
            why = inner.reason if inner.kind == UNSUPPORTED else "a vector of vectors"
            return BranchInfo(name, UNSUPPORTED, reason=f"jagged array of {why}")
        return BranchInfo(name, JAGGED, inner.dtype, collection_of(name))
    if isinstance(form, ak.forms.RecordForm):
        return BranchInfo(name, UNSUPPORTED, reason="a record/struct; select its leaf fields")
    return BranchInfo(name, UNSUPPORTED, reason=f"awkward form {type(form).__name__}")


def collection_of(name: str) -> str:
    """The collection a jagged branch belongs to: ``Jet`` for ``Jet_pt`` or ``Jet.pt``."""
    for sep in (".", "_"):
        if sep in name:
            return name.split(sep, 1)[0]
    return name


class RootInput:
    """One opened tree (TTree or RNTuple). Use :func:`open_input` to get one.

    ``branches`` maps every readable name to its :class:`BranchInfo`, in file order.
    """

    def __init__(self, file, tree, source: Source, tree_name: str, workers: int):
        self._file = file
        self._tree = tree
        self.source = source
        self.tree_name = tree_name
        self.format = "RNTuple" if "RNTuple" in type(tree).__name__ else "TTree"
        self.entries = int(tree.num_entries)
        self.known_entries = self.entries  # the records' reader knows it only after a read
        self.branches = self._describe()
        self._executor = ThreadPoolExecutor(workers) if workers > 1 else None

    @property
    def path(self) -> str:
        return self.source.url

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)
        self._file.close()

    def largest_cluster(self) -> int:
        """Entries in the file's largest cluster (TTree: the ranges where every branch's
        baskets start together; RNTuple: its clusters): a read of any entry in one
        decompresses all of it, so reads should not cut one in two. 0 when unknown."""
        try:
            if self.format == "TTree":
                offsets = [int(o) for o in self._tree.common_entry_offsets()]
                return max((b - a for a, b in itertools.pairwise(offsets)), default=0)
            return max((int(c.num_entries) for c in self._tree.cluster_summaries), default=0)
        except Exception:  # noqa: BLE001 (an optimisation: without it, reads are only slower)
            return 0

    def _describe(self) -> dict[str, BranchInfo]:
        if self.format == "TTree":
            return self._describe_ttree()
        out: dict[str, BranchInfo] = {}
        form = self._tree.to_akform()[0]
        for field, sub in zip(form.fields, form.contents, strict=True):
            _describe_field(field, sub, out)
        return out

    def _describe_ttree(self) -> dict[str, BranchInfo]:
        """Every readable branch, split objects' sub-branches included; ``self._paths`` gets
        the uproot path of each name that is not a top-level branch's."""
        self._paths: dict[str, str] = {}
        entries: list[tuple[str, str, BranchInfo]] = []  # (name, path, info) in file order
        for branch in self._tree.branches:
            self._walk(branch, branch.name, branch.name, entries)
        out: dict[str, BranchInfo] = {}
        paths: dict[str, list[str]] = {}
        for name, path, info in entries:
            paths.setdefault(name, []).append(path)
            out.setdefault(name, info)
        for name, where in paths.items():
            if len(where) > 1:
                out[name] = BranchInfo(
                    name,
                    UNSUPPORTED,
                    reason=f"{len(where)} branches share this name ({', '.join(where)}); "
                    "uproot reads only the first: rename one in the file",
                )
            elif where[0] != name:
                self._paths[name] = where[0]
        return out

    def _walk(self, branch, name: str, path: str, out: list) -> None:
        subs = branch.branches
        typename = _typename(branch)
        if not subs:
            out.append((name, path, _classify_branch(branch, name, typename)))
            return
        info = _classify_branch(branch, name, typename)
        if info.kind == FLAT:  # a TClonesArray's own branch: the number of objects
            out.append((name, path, replace(info, counter_of=name)))
        for sub in subs:
            own = sub.name
            # Delphes/TClonesArray leaves carry their collection ("Jet.PT"); struct members
            # do not ("I16" of "evt" becomes "evt.I16")
            sub_name = own if "." in own else f"{name}.{own}"
            self._walk(sub, sub_name, f"{path}/{own}", out)

    def require(self, names: Sequence[str]) -> None:
        """Raise :class:`BranchError` unless every name is a readable branch here."""
        require_names(
            self.branches, names, "branch", f"{self.format} {self.tree_name!r}", self.path
        )

    def arrays(self, names: Sequence[str], start: int = 0, stop: int | None = None) -> ak.Array:
        """Read ``names`` for entries [start, stop) as one record array with those fields."""
        stop = self.entries if stop is None else stop
        self.require(names)
        try:
            if self.format == "TTree":
                paths = [self._paths.get(n, n) for n in names]
                raw = self._tree.arrays(
                    paths,
                    entry_start=start,
                    entry_stop=stop,
                    decompression_executor=self._executor,
                    interpretation_executor=self._executor,
                )
                if paths == list(names):
                    return raw
                return ak.zip(
                    {n: raw[p] for n, p in zip(names, paths, strict=False)}, depth_limit=1
                )
            tops = list(dict.fromkeys(n.split(".", 1)[0] for n in names))
            raw = self._tree.arrays(tops, entry_start=start, entry_stop=stop)
            return ak.zip({n: _leaf(raw, n) for n in names}, depth_limit=1)
        except _READ_ERRORS as err:
            raise InputFileError(
                f"cannot read entries {start}-{stop} of {list(names)[:5]}...: {_short(err)};\n"
                f"the file is truncated or corrupt: fetch it again\nin file {self.path}"
            ) from err

    def iterate(
        self,
        names: Sequence[str],
        step: int,
        start: int = 0,
        stop: int | None = None,
        *,
        target_bytes: int | None = None,
    ) -> Iterator[tuple[int, ak.Array]]:
        """Yield ``(first_entry, arrays)`` in steps of ``step`` entries (bounded memory).

        With ``target_bytes`` the steps after the first grow until they hold about that many
        bytes of decoded values: a step's cost is mostly per call, so a tree of tiny entries
        read 100,000 at a time spends its time in overhead (an RNTuple of 100M 4-byte entries:
        532 s in fixed steps, 3.8 s in one). The first is then sized from the branches' basket
        sizes (TTree) or types (an RNTuple's flat fields), and a step ends where a cluster starts, when that is at most 4 steps
        away: a step that cuts a cluster decompresses its baskets twice (a TTree of 5M 4-byte
        entries in one basket per branch was decompressed three times)."""
        stop = self.entries if stop is None else min(stop, self.entries)
        lo, size = start, max(step, 1)
        if target_bytes:  # the first step sized from the branches' sizes, where known
            size = max(size, int(target_bytes / self._bytes_per_entry(names)))
        bounds = self._cluster_starts() if target_bytes else None  # steps as given otherwise
        while lo < stop:
            hi = _snapped(bounds, lo, min(lo + size, stop), stop, lo + 4 * size)
            arrays = self.arrays(names, lo, hi)
            yield lo, arrays
            if target_bytes and hi > lo:
                size = grown_step(size, arrays, target_bytes)
            lo = hi

    def _bytes_per_entry(self, names: Sequence[str]) -> float:
        """Decoded bytes per entry of ``names``: from the TTree's basket sizes; for an RNTuple
        of flat fields from their types (inf: unknown, so the first step stays as given)."""
        if not self.entries:
            return math.inf
        if self.format != "TTree":
            infos = [self.branches.get(n) for n in names]
            if any(i is None or i.kind != FLAT or i.dtype is None for i in infos):
                return math.inf
            return float(max(sum(np.dtype(i.dtype).itemsize for i in infos), 1))
        try:
            total = sum(self._tree[self._paths.get(n, n)].uncompressed_bytes for n in names)
        except Exception:  # noqa: BLE001 (an optimisation: without it, the first step is small)
            return math.inf
        return max(total / self.entries, 1.0)

    def _cluster_starts(self) -> np.ndarray | None:
        """The entries where the clusters start (TTree: where every branch's baskets start
        together), with the entry count last; None when unknown."""
        try:
            if self.format != "TTree":
                starts = [int(c.num_first_entry) for c in self._tree.cluster_summaries]
                return np.asarray([*starts, self.entries])
            return np.asarray([int(o) for o in self._tree.common_entry_offsets()])
        except Exception:  # noqa: BLE001 (an optimisation: without it, steps cut clusters)
            return None


def _snapped(bounds: np.ndarray | None, lo: int, hi: int, stop: int, most: int) -> int:
    """A step's end moved to a cluster start so that no cluster is decompressed twice: up to
    the next one when that stays within ``most``, else down to the last one after ``lo``;
    ``hi`` when there is none."""
    if bounds is None or hi >= stop:
        return hi
    up = bounds[np.searchsorted(bounds, hi)] if hi <= bounds[-1] else stop
    if up <= most:
        return min(int(up), stop)
    down = bounds[(bounds > lo) & (bounds <= hi)]
    return int(down[-1]) if down.size else hi


def grown_step(size: int, arrays: ak.Array, target_bytes: int) -> int:
    """The next step of an iteration (:meth:`RootInput.iterate`): grown until a step holds
    about ``target_bytes`` of decoded values, never shrunk."""
    per_entry = max(arrays.nbytes / max(len(arrays), 1), 1.0)
    return max(size, int(target_bytes / per_entry))


def require_names(
    branches: dict[str, BranchInfo], names: Sequence[str], what: str, container: str, path: str
) -> None:
    """Raise :class:`BranchError` for the first of ``names`` that ``branches`` lacks (with the
    closest ones) or cannot read; ``what`` is "branch" or "field", ``container`` the tree or
    records it was looked for in."""
    for name in names:
        info = branches.get(name)
        if info is None:
            raise BranchError(
                f"{what} {name!r} is not in {container} "
                f"({format_closest(name, branches)})\nin file {path}"
            )
        if info.kind == UNSUPPORTED:
            raise BranchError(
                f"{what} {name!r} cannot be used: {info.reason};\n"
                f"remove it from selected_branches or add it to exclude_branches\n"
                f"in file {path}"
            )


def _typename(branch) -> str | None:
    try:
        return str(branch.typename)
    except Exception:  # noqa: BLE001  uproot raises many kinds for odd types
        return None


def _classify_branch(branch, name: str, typename: str | None) -> BranchInfo:
    if typename and typename.startswith("std::bitset"):  # Bacon's trigger bits
        return BranchInfo(
            name, UNSUPPORTED, reason="a std::bitset, which uproot cannot read", typename=typename
        )
    try:
        form = branch.interpretation.awkward_form(None)
    except Exception as err:  # noqa: BLE001  uproot raises many kinds for odd types
        return BranchInfo(
            name,
            UNSUPPORTED,
            reason=f"uproot cannot interpret it ({_short(err)})",
            typename=typename,
        )
    info = classify(name, form)
    if "." in name and info.kind == JAGGED and "." not in branch.name:
        info = replace(info, collection=name)  # a struct's own vector, not a collection's leaf
    return replace(info, typename=typename)


def _describe_field(name: str, form: ak.forms.Form, out: dict[str, BranchInfo]) -> None:
    """An RNTuple field: a record's leaves (also inside a collection) under dotted names."""
    if isinstance(form, ak.forms.RecordForm) and form.fields:
        for leaf, sub in zip(form.fields, form.contents, strict=True):
            _describe_field(f"{name}.{leaf}", sub, out)
        return
    if isinstance(form, (ak.forms.ListOffsetForm, ak.forms.ListForm)) and isinstance(
        form.content, ak.forms.RecordForm
    ):
        record = form.content
        for leaf, leaf_form in zip(record.fields, record.contents, strict=True):
            leaf_name = f"{name}.{leaf}"
            out[leaf_name] = classify(leaf_name, form.copy(content=leaf_form))
        return
    out[name] = classify(name, form)


def _leaf(array: ak.Array, name: str) -> ak.Array:
    for part in name.split("."):
        array = array[part]
    return array


def open_input(
    source: Source | str,
    tree: str,
    *,
    timeout: float = 30.0,
    workers: int = 1,
    preprocessing: Mapping[str, str] | None = None,
    file_format: str | None = None,
) -> RootInput:
    """Open ``tree`` in ``source``; fail early with a message naming the file.

    ``workers`` > 1 decompresses baskets on that many threads (zlib, lz4 and zstd release
    the GIL), which is how a 2-core machine reads at twice the single-thread speed.
    ``preprocessing``: a record hook's document (:mod:`rootml.hooks`), for record inputs only.
    ``file_format`` (``root``, ``json``, ``csv``, ``parquet``, ``avro``) overrides what the
    file's name says.
    """
    src = resolve(source) if isinstance(source, str) else source
    fmt = record_format(src.basename, file_format)
    if fmt:
        return _open_records(src, timeout, workers, preprocessing, fmt)
    if preprocessing:
        raise ConfigError(
            f"{preprocessing['file']} (preprocessing) applies to record inputs (JSON lines, "
            "CSV, Parquet, Avro), not to ROOT files: for ROOT files use new_variables and "
            f"selection (docs/expressions.md)\nin file {src.url}"
        )
    # no array cache: every range is read once; pread instead of mmap for local files, so
    # RSS stays bounded by the chunk, not by how much of the file has been touched
    options = {"timeout": timeout, "array_cache": None}
    if not src.remote:
        options["handler"] = uproot.source.file.MultithreadedFileSource
    elif src.scheme in ("http", "https"):
        # uproot's default handler goes through fsspec, whose HTTP needs aiohttp; uproot's own
        # HTTPSource needs only the standard library (and does multi-range requests)
        options["handler"] = uproot.source.http.HTTPSource
    elif src.scheme == "root":
        # fsspec-xrootd hands the timeout to the XRootD client, which takes whole seconds only
        options["timeout"] = max(1, math.ceil(timeout))
    try:
        file = uproot.open(src.url, **options)
    except FileNotFoundError as err:
        raise InputFileError(f"no such file\nin file {src.url}") from err
    except ImportError as err:  # root:// goes through fsspec-xrootd, an optional extra
        raise InputFileError(
            f"cannot open a {src.scheme}:// URL: {_short(err)};\n"
            "install the XRootD client with: pip install 'rootml[xrootd]'"
            f"\nin file {src.url}"
        ) from err
    except _READ_ERRORS as err:
        raise InputFileError(
            f"cannot open as a ROOT file: {_short(err)};\n"
            "check that it is a complete ROOT file (not a text list, not truncated) "
            f"and that the URL is reachable\nin file {src.url}"
        ) from err
    try:
        trees = _trees(file)
        if tree not in trees:
            found = ", ".join(f"{k!r} ({v})" for k, v in trees.items()) or "none"
            raise TreeNotFoundError(
                f"no TTree or RNTuple named {tree!r}; trees in the file: {found};\n"
                "set 'branch' in params.json (or 'tree' in input.yml) to one of them"
                f"\nin file {src.url}"
            )
        try:
            # RootInput reads the entry count and the field list: for an RNTuple that is the
            # footer, often the first thing past the end of a truncated file
            return RootInput(file, file[tree], src, tree, workers)
        except _READ_ERRORS as err:
            raise InputFileError(
                f"cannot read the header of {tree!r}: {_short(err)};\n"
                f"the file is truncated or corrupt: fetch it again\nin file {src.url}"
            ) from err
    except BaseException:
        file.close()
        raise


def _open_records(
    src: Source, timeout: float, workers: int, preprocessing: Mapping | None, fmt: str
):
    """A JSON lines, CSV, Parquet or Avro file (rootml.records: the same interface as
    :class:`RootInput`); its readers are the ``records`` extra."""
    hook = load_hook(preprocessing) if preprocessing else None
    try:
        from .records import open_records
    except ImportError as err:
        raise InputFileError(
            f"cannot read a {fmt} file: {err};\n"
            "install the record readers with: pip install 'rootml[records]'"
            f"\nin file {src.url}"
        ) from err
    return open_records(src, format=fmt, timeout=timeout, workers=workers, preprocessing=hook)


def _trees(file) -> dict[str, str]:
    """Tree-like objects in ``file`` (name without cycle → class name), nested dirs included."""
    try:
        names = file.classnames(recursive=True)
    except _READ_ERRORS as err:
        raise InputFileError(
            f"cannot read the list of keys: {_short(err)};\n"
            f"the file is truncated or corrupt: fetch it again\nin file {file.file_path}"
        ) from err
    out = {}
    for key, cls in names.items():
        if cls in TREE_CLASSES:
            out.setdefault(key.rsplit(";", 1)[0], "RNTuple" if "RNTuple" in cls else "TTree")
    return out


def _short(err: BaseException) -> str:
    """The gist of an uproot error: its first sentence, even where uproot breaks it over lines
    ("expected Chunk of length 99,\nreceived 0 bytes ..."), without its own "in file" line."""
    lines = [
        line.strip()
        for line in str(err).splitlines()
        if line.strip() and not line.strip().startswith(("in file", "in object"))
    ]
    taken: list[str] = []
    for line in lines[:3]:
        taken.append(line)
        if not line.endswith(","):
            break
    return " ".join(taken).rstrip(",;: ") or type(err).__name__

"""Per-file specs: one vectorised pass over the branches a run needs.

For each branch the pass records its kind (flat, jagged, unsupported with the reason), dtype,
entries, finite min/max, mean/std, NaN and inf counts, the distinct values of small integer
branches (for labels taken from a branch), and for jagged branches the multiplicity histogram
(from which max and quantiles follow, and which merges exactly across files).

The statistics are accumulated per step with Chan's parallel formula, so memory is bounded by
the step size and the result does not depend on it beyond floating-point rounding.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import awkward as ak
import numpy as np
from tqdm import tqdm

from . import __version__, reweighting
from .categories import Counts
from .columns import ColumnWriter
from .config import expand_names
from .derivation import Derivation, apply, check_kinds, from_json
from .exceptions import BranchError, ConfigError, DataError, ExpressionError, format_closest
from .expressions import Kind
from .multiplicity import add_histogram, multiplicity_summary
from .reading import CATEGORY, FLAT, JAGGED, UNSUPPORTED, BranchInfo, RootInput, open_input
from .schemas import validate
from .sources import Source
from .storage import read_json
from .transform import present

log = logging.getLogger(__name__)

SCHEMA_ID = "https://rootml.invalid/schemas/file-specs/1"
MAX_UNIQUE = 64  # distinct values kept for integer/bool branches
#: probabilities at which specs records each branch's quantiles (merge mixes them across files)
QUANTILE_PROBS = (
    0.0,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.3,
    0.4,
    0.5,
    0.6,
    0.7,
    0.8,
    0.9,
    0.95,
    0.98,
    0.99,
    0.995,
    0.998,
    0.999,
    1.0,
)
SAMPLE_SIZE = 8192  # values kept per branch for the quantiles: between this and twice this


# ------------------------------------------------------------------ pure accumulators


class ValueSample:
    """A uniform sample of a stream of values, of bounded size, for quantiles.

    Every value is kept with the same probability ``rate`` (Bernoulli, drawn by geometric
    skips: the work is proportional to the values kept); when the stream outgrows twice
    :data:`SAMPLE_SIZE` the rate halves and what was kept is thinned to match. A fixed seed
    and the reading order make it the same sample on every run; a file of fewer values than
    that keeps them all (exact quantiles).
    """

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.rate = 1.0
        self.seen = 0
        self.parts: list[np.ndarray] = []

    def add(self, values: np.ndarray) -> None:
        n = values.size
        rate = self.rate
        while (self.seen + n) * rate > 2 * SAMPLE_SIZE:
            rate /= 2
        if rate < self.rate:
            kept = self.values()
            self.parts = [kept[self._picks(kept.size, rate / self.rate)]]
            self.rate = rate
        part = values if rate == 1.0 else values[self._picks(n, rate)]
        self.parts.append(part.astype(np.float32))
        self.seen += n

    def _picks(self, n: int, rate: float) -> np.ndarray:
        """Indices of ``range(n)``, each present with probability ``rate``, ascending."""
        expected = n * rate
        gaps = self.rng.geometric(rate, size=int(expected + 6 * math.sqrt(expected) + 16))
        idx = np.cumsum(gaps) - 1
        while idx[-1] < n - 1:  # a rare shortfall: draw on from where it stopped
            more = np.cumsum(self.rng.geometric(rate, size=idx.size)) + idx[-1]
            idx = np.concatenate([idx, more])
        return idx[idx < n]

    def values(self) -> np.ndarray:
        if len(self.parts) > 1:
            self.parts = [np.concatenate(self.parts)]
        return self.parts[0] if self.parts else np.zeros(0, dtype=np.float32)

    def quantiles(self, lo: float, hi: float) -> dict:
        """The sample's quantiles at :data:`QUANTILE_PROBS`, with the exact ``lo``/``hi``
        at 0 and 1, and how many values they came from."""
        q = np.quantile(self.values().astype(np.float64), QUANTILE_PROBS)
        q = np.clip(q, lo, hi)
        q[0], q[-1] = lo, hi
        return {
            "probs": list(QUANTILE_PROBS),
            "values": [float(v) for v in q],
            "sampled": int(self.values().size),
        }


@dataclass
class Moments:
    """Running count/min/max/mean/M2 over finite values plus NaN/inf counts, and a sample
    for quantiles."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    lo: float = math.inf
    hi: float = -math.inf
    nan: int = 0
    inf: int = 0
    unique: set | None = field(default_factory=set)
    sample: ValueSample = field(default_factory=ValueSample)

    def add(self, values: np.ndarray) -> None:
        if values.dtype.kind == "b":
            values = values.view(np.uint8)
        if values.dtype.kind == "f":
            finite = np.isfinite(values)
            n_bad = values.size - int(np.count_nonzero(finite))
            if n_bad:
                nan = int(np.count_nonzero(np.isnan(values)))
                self.nan += nan
                self.inf += n_bad - nan
                values = values[finite]
            self.unique = None
        if values.size == 0:
            return
        n = values.size
        lo, hi = values.min(), values.max()  # in the branch's own type: exact
        if self.unique is not None:
            self.unique.update(_distinct(values, lo, hi))
            if len(self.unique) > MAX_UNIQUE:
                self.unique = None
        # float64 accumulation without a float64 copy of the values; not np.dot: its BLAS
        # threads spin, and two scattered specs on two cores ran 2.5x slower (measured)
        mean = float(np.mean(values, dtype=np.float64))
        deviation = np.subtract(values, mean, dtype=np.float64)
        m2 = float(np.square(deviation, out=deviation).sum())
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.count * n / total
        self.count = total
        self.lo = min(self.lo, float(lo))
        self.hi = max(self.hi, float(hi))
        self.sample.add(values)

    def to_json(self) -> dict:
        have = self.count > 0
        return {
            "count": self.count,
            "min": self.lo if have else None,
            "max": self.hi if have else None,
            "mean": self.mean if have else None,
            "std": math.sqrt(self.m2 / self.count) if have else None,
            "nan": self.nan,
            "inf": self.inf,
            "unique": sorted(self.unique) if self.unique is not None else None,
            "quantiles": self.sample.quantiles(self.lo, self.hi) if have else None,
        }


def _distinct(values: np.ndarray, lo, hi) -> list:
    """The distinct values of an integer array whose min/max are ``lo``/``hi`` (a histogram
    when the span is small: a sort costs ten times more on a 100k-entry step), or more than
    :data:`MAX_UNIQUE` of them, enough to say the branch is not discrete, when its first
    values already hold that many."""
    if int(hi) - int(lo) < 4096:
        # in int64 with wrap-around, exact for any integer type since the span is small
        shifted = values.astype(np.int64) - np.asarray(lo).astype(np.int64)
        return [int(lo) + int(p) for p in np.flatnonzero(np.bincount(shifted))]
    head = np.unique(values[: 4 * MAX_UNIQUE])
    if head.size > MAX_UNIQUE:  # a size, a time, an id: the head has too many already
        return head.tolist()
    return np.unique(values).tolist()


#: specs reads ``step`` entries first, then steps of about this many decoded bytes
STEP_BYTES = 32 * 2**20

# ------------------------------------------------------------------ branch selection


def select_branches(
    branches: dict[str, BranchInfo],
    *,
    selected: Sequence[str] = (),
    exclude: Sequence[str] = (),
    identifiers: Sequence[str] = (),
    extra: Sequence[str] = (),
    where: str = "",
) -> tuple[list[str], dict[str, str]]:
    """Which branches to scan, and which were skipped (name → reason).

    ``selected`` and ``exclude`` take names and patterns (:func:`~rootml.config.expand_names`).
    Selected branches must exist and be supported (else BranchError); without a selection
    every supported branch except identifiers, excluded ones and split collections' object
    counts is used, and what is skipped is logged as one table. ``extra`` (the label branch)
    is always read.
    """
    skipped: dict[str, str] = {}
    dropped = set(expand_names(exclude, branches, strict=False)) | set(identifiers)
    if selected:
        # patterns take usable branches only; a plain name of an unusable one is refused later
        usable = [n for n, b in branches.items() if b.kind != UNSUPPORTED]
        names = [n for n in expand_names(selected, usable) if n not in dropped]
    else:
        names = []
        for name, info in branches.items():
            if name in dropped:
                continue
            if info.kind == UNSUPPORTED:
                skipped[name] = info.reason or "unsupported"
            elif info.counter_of:
                skipped[name] = (
                    f"the object count of the split collection {name} (its leaves are read); "
                    "name it in selected_branches to make it a feature"
                )
            else:
                names.append(name)
        if skipped:
            log.warning(
                "skipped %d branch(es) in %s:\n%s",
                len(skipped),
                where,
                skipped_table(skipped, branches),
            )
    names += [n for n in extra if n not in names]
    if not names:
        raise BranchError(_nothing_left(branches, skipped, selected, exclude, where))
    return names, skipped


def skipped_table(skipped: dict[str, str], branches: dict[str, BranchInfo]) -> str:
    """One line per skipped branch: name, C++ type, reason."""
    rows = [
        (n, (branches[n].typename if n in branches else None) or "?", r) for n, r in skipped.items()
    ]
    width = max(len(n) for n, _, _ in rows)
    twidth = min(max(len(t) for _, t, _ in rows), 40)
    return "\n".join(f"  {n:<{width}}  {t:<{twidth}}  {r}" for n, t, r in rows)


def _nothing_left(branches, skipped, selected, exclude, where: str) -> str:
    if selected or exclude:
        cause = "selected_branches/exclude_branches (--branches/--exclude) leave no branch"
    else:
        cause = "no branch of the tree can be a feature"
    text = f"{cause}"
    if skipped:
        text += f"; skipped:\n{skipped_table(skipped, branches)}"
    usable = [n for n, b in branches.items() if b.kind != UNSUPPORTED]
    if usable:
        text += f"\nbranches that can be selected: {', '.join(usable[:12])}"
        text += f" (and {len(usable) - 12} more)" if len(usable) > 12 else ""
    return f"{text}\nin file {where}"


# ------------------------------------------------------------------ the stage


def scan(
    root: RootInput,
    names: Sequence[str],
    *,
    step: int = 100_000,
    sink: ColumnWriter | None = None,
    derivation: Derivation | None = None,
    read: Sequence[str] | None = None,
    new: dict[str, str | None] | None = None,
    reweight: Mapping | None = None,
) -> tuple[dict[str, dict], dict[str, int], np.ndarray | None]:
    """Statistics for ``names`` over every entry of ``root`` (one pass, bounded memory), and
    the cut flow.

    With a ``derivation`` the pass reads ``read`` (``names``' branches and what its expressions
    need), applies it (:func:`rootml.derivation.apply`) and takes the statistics of the events
    and objects that pass; ``names`` may then hold its new variables (``new``: name -> their
    collection, or None for one value per event). With a ``sink`` the
    decoded values of every branch read are also staged for preprocess, before any cut.
    With ``reweight`` (input.yml's section) the passing events' histogram in its variables,
    weighted by the event weight, is the third result (else None).
    """
    read = list(read or names)
    root.require(read)
    collections = {n: root.branches[n].collection for n in read if root.branches[n].kind == JAGGED}
    infos: dict[str, BranchInfo] = {}
    moments = {n: Counts() if _kind(root, n) == CATEGORY else Moments() for n in names}
    hists = {n: np.zeros(0, dtype=np.int64) for n in names}
    missing: dict[str, int] = {}  # values absent from records (record files), per branch
    cutflow: dict[str, int] = {}
    histogram = None
    bar = tqdm(
        total=root.known_entries,
        unit="events",
        desc=f"specs {root.source.basename}",
        disable=not sys.stderr.isatty(),
    )
    for _, arrays in root.iterate(read, step, target_bytes=STEP_BYTES):
        bar.update(len(arrays))
        if sink is not None:
            for name in read:
                sink.add(name, *_values(arrays[name], root.branches[name].kind))
        columns, keep, weights = {n: arrays[n] for n in names if n in arrays.fields}, None, None
        if derivation:
            derived = apply(derivation, arrays, collections)
            columns, keep, weights = derived.columns, derived.keep, derived.weights
            for key, count in derived.cutflow.items():
                cutflow[key] = cutflow.get(key, 0) + count
        if reweight:
            values = [np.asarray(columns[v]) for v in reweight["variables"]]
            values = values if keep is None else [v[keep] for v in values]
            part = reweighting.histogram(values, reweight["bins"], weights)
            histogram = part if histogram is None else histogram + part
        for name in names:
            column = columns[name] if keep is None else columns[name][keep]
            info = infos.get(name) or infos.setdefault(
                name, _info(name, column, root.branches, new or {})
            )
            values, counts, valid = _values(column, info.kind)
            if counts is not None:
                hists[name] = add_histogram(hists[name], np.bincount(counts))
            if valid is not None:
                missing[name] = missing.get(name, 0) + int(valid.size - valid.sum())
                values = values[valid]
            moments[name].add(values)
    bar.close()
    out: dict[str, dict] = {}
    for name in names:
        info = infos.get(name) or root.branches[name]
        entry = {"kind": info.kind, "dtype": info.dtype, "entries": root.entries}
        entry.update(moments[name].to_json())
        if missing.get(name):
            entry["missing"] = missing[name]
        if info.kind == JAGGED:
            entry["collection"] = info.collection
            entry["fixed_length"] = info.fixed_length
            entry["multiplicity"] = multiplicity_summary(hists[name])
        out[name] = entry
    return out, cutflow, histogram


def _kind(root: RootInput, name: str) -> str | None:
    info = root.branches.get(name)
    return info.kind if info is not None else None


def _values(column, kind: str) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """A column's values as one NumPy array (a category's as they are: strings), for a
    jagged one its object counts, and where some values are missing (a field absent from
    some records: an option type) which are there; the missing ones are 0 in the values."""
    if kind == CATEGORY:
        return column, None, None
    counts = None
    if kind != FLAT:
        counts = np.asarray(ak.num(column, axis=1))
        column = ak.flatten(column, axis=1)
    values, there = present(column)
    return values, counts, there


def _info(name: str, column, branches: dict[str, BranchInfo], new: dict) -> BranchInfo:
    """A branch's description, or a new variable's: its collection from the checked
    expression (``new``: name -> collection or None), its dtype from its first values."""
    if name not in new:
        return branches[name]
    if new[name] is None:
        return BranchInfo(name, FLAT, str(np.asarray(column).dtype))
    dtype = str(np.asarray(ak.to_numpy(ak.flatten(column, axis=1))).dtype)
    return BranchInfo(name, JAGGED, dtype, new[name])


def file_specs(
    source: Source | str,
    tree: str,
    *,
    selected: Sequence[str] = (),
    exclude: Sequence[str] = (),
    identifiers: Sequence[str] = (),
    label_branch: str | None = None,
    sha256: str | None = None,
    size: int | None = None,
    step: int = 100_000,
    workers: int = 1,
    columns: str | Path | None = None,
    derived: Mapping | None = None,
    preprocessing: Mapping | None = None,
    file_format: str | None = None,
) -> dict:
    """Open one file and build its specs document (validated against the shipped schema).

    ``columns``: also stage the scanned branches' values in this folder for preprocess
    (see :mod:`rootml.columns`); it is complete, or absent, when this returns.
    ``derived``: input.yml's ``selection``, ``object_selection`` and ``new_variables``: the
    statistics are those of the events and objects that pass, the new variables are
    branches of the document, and the cut flow is recorded.
    ``preprocessing``: a record hook's document (:mod:`rootml.hooks`); the branches are what it
    returns, and it is kept in the document for merge and preprocess.
    """
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        root = stack.enter_context(
            open_input(
                source,
                tree,
                workers=workers,
                preprocessing=preprocessing,
                file_format=file_format,
            )
        )
        if root.known_entries == 0:  # records: known at open when the file holds none
            raise DataError(
                f"{root.format} {tree!r} has no entries; remove the file from files.txt\n"
                f"in file {root.path}"
            )
        extra = [label_branch] if label_branch else []
        names, skipped = select_branches(
            root.branches,
            selected=selected,
            exclude=exclude,
            identifiers=identifiers,
            extra=extra,
            where=root.path,
        )
        derivation, new = _derivation(derived, root)
        read = list(dict.fromkeys([*names, *derivation.needs()]))
        root.require(read)
        sink = None
        if columns is not None:
            kinds = {n: root.branches[n].kind for n in read}
            sink = stack.enter_context(ColumnWriter(columns, kinds))
        names = [*names, *[n for n in new if n not in names]]
        reweight = (derived or {}).get("reweight")
        if reweight:
            _check_reweight_variables(reweight, root, new)
            read += [v for v in reweight["variables"] if v in root.branches and v not in read]
        branches, cutflow, histogram = scan(
            root,
            names,
            step=step,
            sink=sink,
            derivation=derivation,
            read=read,
            new=new,
            reweight=reweight,
        )
        if derivation and cutflow.get("events passing", 1) == 0:
            raise DataError(
                f"the selection keeps no event of this file ({_flow(cutflow)});\n"
                "loosen input.yml's selection or remove the file from the list\n"
                f"in file {root.path}"
            )
        for name, reason in skipped.items():
            branches[name] = {"kind": UNSUPPORTED, "reason": reason}
            if root.branches[name].typename:
                branches[name]["type"] = root.branches[name].typename
        file = {
            "source": root.source.original,
            "url": root.source.url,
            "basename": root.source.basename,
            "size": size,
            "sha256": sha256,
        }
        doc = {
            "schema": SCHEMA_ID,
            "rootml_version": __version__,
            "file": file,
            "tree": tree,
            "format": root.format,
            "entries": root.entries,
            "identifiers": [i for i in identifiers if i in root.branches],
            "seconds": 0.0,
            "branches": branches,
        }
        if derivation or reweight:
            jagged = {
                n: root.branches[n].collection for n in read if root.branches[n].kind == JAGGED
            }
            doc["derived"] = {**derivation.to_json(), "collections": jagged}
            doc["cutflow"] = cutflow
        if preprocessing:
            doc["preprocessing"] = dict(preprocessing)
        if reweight:
            doc["derived"]["reweight"] = dict(reweight)
            doc["reweight_histogram"] = histogram.tolist()
        validate(doc, "file-specs", where=f"specs of {file['url']}")
        staged = ""
        if sink is not None:
            manifest = sink.commit(root.entries, file, tree)
            staged = f"; staged {manifest['bytes'] / 1e6:.1f} MB of columns in {columns}"
    doc["seconds"] = round(time.perf_counter() - t0, 4)
    rate = doc["entries"] / max(doc["seconds"], 1e-9)
    log.info(
        "specs: %s: %d entries, %d branches (%d skipped) in %.2f s (%.0f events/s)%s",
        file["basename"],
        doc["entries"],
        len(names),
        len(skipped),
        doc["seconds"],
        rate,
        staged,
    )
    return doc


def _derivation(derived: Mapping | None, root: RootInput) -> tuple[Derivation, dict]:
    """The parsed, checked expressions for this file, and the new variables' collections."""
    derivation = from_json(derived, list(root.branches))
    if not derivation:
        return derivation, {}
    usable = {n: b for n, b in root.branches.items() if b.kind != UNSUPPORTED}
    kinds = {
        n: Kind(b.collection if b.kind == JAGGED else None, b.dtype == "bool")
        for n, b in usable.items()
    }
    collections = sorted({b.collection for b in usable.values() if b.kind == JAGGED})
    try:
        new = check_kinds(derivation, kinds, collections)
    except ExpressionError as err:
        where = f"{err.fix}\nin file {root.path}"  # the message ends with its fix
        raise ExpressionError(
            err.problem, err.where, where, err.source, err.column, err.detail
        ) from None
    return derivation, {name: kind.collection for name, kind in new.items()}


def _check_reweight_variables(reweight: Mapping, root: RootInput, new: dict) -> None:
    """The reweighting variables are per-event branches or new variables of this file."""
    reweighting.check_config(reweight)
    for name in reweight["variables"]:
        info = root.branches.get(name)
        if name in new:
            jagged = new[name] is not None
        elif info is not None and info.kind != UNSUPPORTED:
            jagged = info.kind == JAGGED
        else:
            known = [*root.branches, *new]
            raise ConfigError(
                f"reweight variable {name!r} is neither a branch nor a new variable "
                f"({format_closest(name, known)})\nin file {root.path}"
            )
        if jagged:
            raise ConfigError(
                f"reweight variable {name!r} has one value per object; reweighting takes one "
                f"per event: define a new variable such as {name}[0] or max({name})"
                f"\nin file {root.path}"
            )


def _flow(cutflow: dict[str, int]) -> str:
    return ", ".join(f"{key}: {count}" for key, count in cutflow.items())


def specs_filename(basename: str) -> str:
    """``specs-<basename without .root>.json``; basenames are unique within a run."""
    stem = basename.removesuffix(".root")
    return f"specs-{stem}.json"


def load_file_specs(path: str | Path) -> dict:
    """Read and validate one per-file specs JSON."""
    doc = read_json(path)
    validate(doc, "file-specs", where=f"file {path}")
    return doc

"""The merge stage: per-file specs into the run's layout (``layout.json``) and chunk plan.

The layout fixes everything preprocessing, training and serving must agree on: the ordered
columns, scaling constants, jagged caps, the padding value, label classes, the split
fractions and seed, and the chunk plan. Its ``digest`` (sha256 of its canonical JSON) is
written into every shard and bundle, so mismatched pieces are caught instead of mixed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from . import __version__, categories
from .config import (
    DEFAULT_IDENTIFIERS,
    Settings,
    check_file_weights,
    check_unique_basenames,
    expand_names,
)
from .derivation import from_json
from .exceptions import BranchError, ConfigError, DataError, LayoutError, format_closest
from .layout import layout_digest
from .multiplicity import add_histogram, histogram_quantile
from .reweighting import FLAT, factors
from .schemas import validate
from .sources import given_format

log = logging.getLogger(__name__)

SCHEMA_ID = "https://rootml.invalid/schemas/layout/1"


SPLIT_KEY = "splitmix64(sha256(seed:basename)[:8] + entry)"


#: the default padding lies this fraction of the scaled range below it: outside, so it never
#: equals a real value, yet close, which trains better than far (benchmarks/bench_padding.py;
#: the table in docs/padding.md: min-max test AUC 0.780 at -1, 0.833 at -0.01)
PAD_MARGIN = 0.01
#: the quantiles the default "quantile" scaling maps to 0 and 1 (values beyond are clipped)
QUANTILE_RANGE = (0.001, 0.999)


def merge(
    specs: Sequence[dict],
    settings: Settings,
    *,
    labels: Sequence[str] | None = None,
    label_branch: str | None = None,
    weights: Sequence[float] | None = None,
) -> dict:
    """Build the layout document from per-file specs (in files.txt order) and settings: the
    input columns, the extra columns (counts, masks), the file table and the chunk plan.
    ``weights``: one normalisation per file (weights.txt), multiplied into every event's
    weight (with input.yml's ``weight``, per event)."""
    _check_inputs(specs, labels, label_branch)
    if weights is not None:
        check_file_weights(weights, len(specs))
    derived = _derived(specs)
    hook = _preprocessing(specs)
    names = _feature_branches(specs, settings, label_branch)
    _say_identifiers(specs[0], settings)
    merged = {name: _merge_branch(specs, name) for name in names}
    names = _without_empty(names, merged, settings.empty_branches)
    names = _without_identifier_strings(names, merged)
    _check_nan_policy(specs, names, settings.nan_policy)
    _say_missing(specs, names)
    classes, file_labels = _labels(specs, labels, label_branch)
    lo, hi = (0.0, 1.0) if settings.scaling != "standard" else (-settings.clip, settings.clip)
    pad = _padding(settings, lo, hi)
    inputs, features = _input_columns(names, merged, settings)
    extras, extra_features = _extra_columns(inputs, merged, settings, hi - lo)
    _say_truncation(inputs)
    used = allocate_events([s["entries"] for s in specs], settings.nevts)
    files = _file_table(specs, used, file_labels)
    for entry, w in zip(files, weights or (), strict=False):
        entry["weight"] = float(w)
    val, test = settings.val_fraction, settings.test_fraction
    chunk = auto_chunk(settings.chunk_size, len(features) + len(extra_features))
    doc = {
        "schema": SCHEMA_ID,
        "rootml_version": __version__,
        "digest": "0" * 64,
        "tree": specs[0]["tree"],
        "files": files,
        "labels": {
            "source": "branch" if label_branch else "file",
            "branch": label_branch,
            "kind": "binary" if len(classes) == 2 else "multiclass",
            "classes": classes,
            **({"encoding": "category"} if _is_category(specs, label_branch) else {}),
        },
        "seed": settings.seed,
        "split": {"train": round(1 - val - test, 10), "val": val, "test": test, "key": SPLIT_KEY},
        "scaling": settings.scaling,
        "clip": [lo, hi],
        "pad_value": pad,
        "nan_policy": settings.nan_policy,
        "inputs": inputs,
        "extras": extras,
        "features": features + extra_features,
        "dim": len(features) + len(extra_features),
        "nevts": settings.nevts,
        "chunk_size": chunk,
        "read": _read(names, derived, label_branch),
        "chunks": chunk_plan(used, chunk),
    }
    if derived is not None:
        doc["derived"] = derived
    if hook is not None:
        doc["preprocessing"] = hook
    if derived is not None and derived.get("reweight"):
        derived["reweight"]["factors"] = _reweight_factors(
            specs, derived["reweight"], classes, file_labels, weights
        )
    if weights is not None or (derived or {}).get("weight") or (derived or {}).get("reweight"):
        doc["weighted"] = True
    doc["digest"] = layout_digest(doc)
    validate(doc, "layout", where="the merged layout")
    log.info(
        "merge: %d files, %d branches -> %d features, %d classes, %d chunks, %d events",
        len(files),
        len(names),
        doc["dim"],
        len(classes),
        len(doc["chunks"]),
        sum(used),
    )
    return doc


def _reweight_factors(
    specs: Sequence[dict],
    reweight: dict,
    classes: Sequence[str],
    file_labels: Sequence[int] | None,
    weights: Sequence[float] | None,
) -> dict[str, list]:
    """Per class, the factor per bin (rootml.reweighting) from the files' histograms, each
    times its file's weight."""
    if file_labels is None:
        raise ConfigError(
            "reweight needs one label per file (labels.txt); labels from a branch are not "
            "reweighted yet"
        )
    per_class = dict.fromkeys(classes, 0.0)
    for i, s in enumerate(specs):
        h = np.asarray(s["reweight_histogram"], dtype=np.float64)
        per_class[classes[file_labels[i]]] = per_class[classes[file_labels[i]]] + h * (
            weights[i] if weights is not None else 1.0
        )
    found = factors(per_class, reweight.get("target", FLAT))
    return {c: f.tolist() for c, f in found.items()}


def _expressions(doc: dict | None) -> dict:
    return {k: v for k, v in (doc or {}).items() if k != "collections"}


def _derived(specs: Sequence[dict]) -> dict | None:
    """The derivation every file's specs were taken with (the same one, or none), with the
    collection of every jagged branch any file read."""
    docs = [s.get("derived") for s in specs]
    for s, d in zip(specs[1:], docs[1:], strict=True):
        if _expressions(d) != _expressions(docs[0]):
            raise ConfigError(
                f"the specs of {s['file']['basename']} and {specs[0]['file']['basename']} were "
                "taken with different selections or new variables; rerun 'rootml specs' on "
                "every file with the same input.yml"
            )
    if docs[0] is None:
        return None
    collections: dict[str, str] = {}
    for d in docs:
        collections.update(d.get("collections", {}))
    return {**_expressions(docs[0]), "collections": dict(sorted(collections.items()))}


def _preprocessing(specs: Sequence[dict]) -> dict | None:
    """The record preprocessing hook every file's specs were taken with (the same, or none)."""
    hooks = [s.get("preprocessing") for s in specs]
    for s, h in zip(specs[1:], hooks[1:], strict=True):
        if (h or {}).get("sha256") != (hooks[0] or {}).get("sha256"):
            raise ConfigError(
                f"the specs of {s['file']['basename']} and {specs[0]['file']['basename']} were "
                "taken with different preprocessing files (or one without); rerun 'rootml "
                "specs' on every file with the same input.yml or --preproc"
            )
    return hooks[0]


def _read(names: Sequence[str], derived: dict | None, label_branch: str | None) -> list[str]:
    """The branches preprocess reads: the features on disk, what the expressions need, the
    label branch."""
    label = [label_branch] if label_branch else []
    if derived is None:
        return [*names, *label]
    derivation = from_json(derived)
    disk = [n for n in names if n not in derivation.new]
    reweighted = (derived.get("reweight") or {}).get("variables", [])
    extra = [v for v in reweighted if v not in derivation.new]
    return list(dict.fromkeys([*disk, *derivation.needs(), *extra, *label]))


def _check_inputs(
    specs: Sequence[dict], labels: Sequence[str] | None, label_branch: str | None
) -> None:
    """The cheap preconditions: specs to merge, one basename each, one way of labelling with
    one label per file, one tree."""
    if not specs:
        raise ConfigError("no per-file specs to merge; the file list is empty")
    check_unique_basenames([s["file"]["basename"] for s in specs])
    if (labels is None) == (label_branch is None):
        raise ConfigError("give either one label per file or a label branch, not both/neither")
    if labels is not None and len(labels) != len(specs):
        raise ConfigError(
            f"{len(labels)} labels for {len(specs)} files; labels.txt needs one label per file"
        )
    trees = {s["tree"] for s in specs}
    if len(trees) > 1:
        raise ConfigError(f"the specs were made for different trees {sorted(trees)}; rerun specs")


def _padding(settings: Settings, lo: float, hi: float) -> float:
    """The padding value: just below the scaled range [lo, hi] unless set, never inside it."""
    pad = lo - PAD_MARGIN * (hi - lo) if settings.pad_value is None else float(settings.pad_value)
    if lo <= pad <= hi:
        raise ConfigError(
            f"padding value {pad} lies inside the scaled range [{lo}, {hi}] and would collide "
            f"with real values; choose a value below {lo} or above {hi} (params.json 'nan' or "
            "features.pad_value), or leave it unset"
        )
    return pad


def _input_columns(
    names: Sequence[str], merged: dict[str, dict], settings: Settings
) -> tuple[list[dict], list[str]]:
    """One entry per branch (its offset in the row, scaling constants, and for a collection
    its cap and the fraction of events it truncates) and the feature names, in row order."""
    inputs, features, offset = [], [], 0
    for name in names:
        m = merged[name]
        if m["kind"] == "category":
            entry, names_of = _category_column(name, m, settings, offset)
            inputs.append(entry)
            features += names_of
            offset += entry["width"]
            continue
        shift, scale = _scaling(name, m, settings.scaling)
        entry = {
            "branch": name,
            "kind": m["kind"],
            "dtype": m["dtype"],
            "offset": offset,
            "shift": shift,
            "scale": scale,
        }
        if m["kind"] == "jagged":
            cap = _cap(name, m, settings)
            truncated = truncated_fraction(m["multiplicity"]["histogram"], cap)
            entry.update(
                collection=m["collection"], cap=cap, width=cap, truncated=round(truncated, 8)
            )
            features += [f"{name}[{i}]" for i in range(cap)]
        else:
            entry["width"] = 1
            features.append(name)
        offset += entry["width"]
        inputs.append(entry)
    return inputs, features


def _category_column(name: str, m: dict, settings: Settings, offset: int) -> tuple[dict, list[str]]:
    """A string field's column(s): its vocabulary and encoding (rootml.categories); the raw
    values are 0/1 flags (one-hot) or the code, scaled to [0, 1] (index)."""
    vocab = categories.vocabulary(m["categories"])
    choice = settings.categories.get(name, settings.categorical)
    encoding = categories.encoding_of(choice, len(vocab))
    names = categories.feature_names(name, vocab, encoding)
    entry = {
        "branch": name,
        "kind": "category",
        "dtype": "string",
        "offset": offset,
        "width": len(names),
        "shift": 0.0,
        "scale": 1.0 if encoding == "onehot" else 1.0 / max(len(vocab), 1),
        "values": vocab,
        "encoding": encoding,
    }
    left = sum(m["categories"].values()) - sum(m["categories"][v] for v in vocab)
    if left:
        log.info(
            "merge: %s: %d values, the %d most frequent kept, %d records in 'other'",
            name,
            len(m["categories"]),
            len(vocab),
            left,
        )
    return entry, names


def _extra_columns(
    inputs: Sequence[dict], merged: dict[str, dict], settings: Settings, span: float
) -> tuple[list[dict], list[str]]:
    """The columns after the inputs, per collection: its object count (``counts``; scaled to
    ``span``, the width of the scaled range) and its object masks (``masks``)."""
    offset = sum(e["width"] for e in inputs)
    extras, features = [], []
    collections: dict[str, dict] = {}
    for entry in inputs:
        if entry["kind"] == "jagged":
            collections.setdefault(entry["collection"], entry)
    flat = {e["branch"].lower() for e in inputs if e["kind"] == "flat"}
    for coll, entry in collections.items():
        base = {"collection": coll, "branch": entry["branch"], "offset": offset}
        if settings.counts is True or (settings.counts == "auto" and not _has_counter(coll, flat)):
            top = max(merged[entry["branch"]]["multiplicity"]["max"], 1)
            extras.append({"kind": "count", **base, "width": 1, "scale": span / top})
            features.append(f"{coll}__count")
            offset += 1
            base["offset"] = offset
        if settings.masks:
            extras.append({"kind": "mask", **base, "width": entry["cap"]})
            features += [f"{coll}__mask[{i}]" for i in range(entry["cap"])]
            offset += entry["cap"]
    return extras, features


def _file_table(
    specs: Sequence[dict], used: Sequence[int], file_labels: Sequence[int] | None
) -> list[dict]:
    """One entry per file: where it is, its entries and how many are used, its label, and its
    cut flow under selections."""
    files = [
        {
            "id": i,
            "source": s["file"]["source"],
            "url": s["file"]["url"],
            "basename": s["file"]["basename"],
            "entries": s["entries"],
            "used": used[i],
            "label": file_labels[i] if file_labels else None,
            "sha256": s["file"].get("sha256"),
            "size": s["file"].get("size"),
            "format": given_format(s["format"]),
        }
        for i, s in enumerate(specs)
    ]
    for entry, s in zip(files, specs, strict=True):
        if "cutflow" in s:
            entry["cutflow"] = s["cutflow"]
    return files


def _say_truncation(inputs: Sequence[dict]) -> None:
    """One line on the caps of the collections that lose objects in some events."""
    cut = {}
    for e in inputs:
        if e["kind"] == "jagged" and e["truncated"] > 0:
            cut.setdefault(e["collection"], (e["cap"], e["truncated"]))
    if cut:
        listed = ", ".join(
            f"{c} at {cap} ({100 * f:.3g} % of events)" for c, (cap, f) in cut.items()
        )
        log.warning(
            "jagged caps drop the objects beyond them: %s; set features.jagged_cap (max keeps "
            "every object, at the width of the busiest event) or jagged_caps per collection",
            listed,
        )


def _has_counter(collection: str, flat_features: set[str]) -> bool:
    """Whether a flat feature holds the collection's multiplicity by its usual names (NanoAOD's
    ``nJet``, Delphes's ``Jet_size``, ...). Without one, the multiplicity is visible only
    through the padding, which sits just below the real values: ``counts: auto`` then adds it."""
    c = collection.lower()
    return bool({f"n{c}", f"n_{c}", f"{c}_size", f"{c}_n", f"num{c}"} & flat_features)


def _say_identifiers(first: dict, settings: Settings) -> None:
    """Name the branches taken as identifiers (never features). MLaaS4HEP's default list
    matches CMS's run/event/luminosityBlock; a tree with only some of them (a branch that
    happens to be called ``event``) is told, on the console, how to keep it as a feature."""
    found = [i for i in settings.identifiers if i in first.get("identifiers", ())]
    if not found:
        return
    default = tuple(settings.identifiers) == DEFAULT_IDENTIFIERS
    if default and len(found) < len(DEFAULT_IDENTIFIERS):
        log.warning(
            "took %s as identifier(s), never features (the default identifiers are %s); to "
            "use it as a feature set the identifiers: 'identifier' in params.json, "
            "features.identifiers in input.yml or --identifiers",
            ", ".join(found),
            ", ".join(DEFAULT_IDENTIFIERS),
        )
    else:
        log.info("identifiers, never features: %s", ", ".join(found))


def _feature_branches(
    specs: Sequence[dict], settings: Settings, label_branch: str | None
) -> list[str]:
    first = specs[0]["branches"]
    excluded = set(expand_names(settings.exclude, first, strict=False))
    if settings.selected:
        usable = [n for n, b in first.items() if b["kind"] != "unsupported"]
        names = [n for n in expand_names(settings.selected, usable) if n not in excluded]
    else:
        names = [n for n, b in first.items() if b["kind"] != "unsupported" and n not in excluded]
    new = (specs[0].get("derived") or {}).get("new_variables", {})
    names += [n for n in new if n not in names and n not in excluded]  # features by default
    names = [n for n in names if n != label_branch and n not in settings.identifiers]
    if not names:
        raise BranchError(
            "no feature branches left after selected_branches/exclude_branches "
            f"(--branches/--exclude) and the identifiers\nin file {specs[0]['file']['url']}"
        )
    for s in specs:
        branches, where = s["branches"], s["file"]["url"]
        for name in names:
            b = branches.get(name)
            if b is None:
                raise BranchError(
                    f"branch {name!r} is missing ({format_closest(name, branches)});\n"
                    f"add it to exclude_branches or drop the file\nin file {where}"
                )
            if b["kind"] == "unsupported":
                raise BranchError(
                    f"branch {name!r} cannot be a feature: {b['reason']};\n"
                    f"add it to exclude_branches\nin file {where}"
                )
            ref = specs[0]["branches"][name]
            if b["kind"] != ref["kind"]:
                raise BranchError(
                    f"branch {name!r} is {b['kind']} here but {ref['kind']} in "
                    f"{specs[0]['file']['url']}; exclude it or fix the files\nin file {where}"
                )
        if label_branch and label_branch not in branches:
            raise BranchError(
                f"label branch {label_branch!r} is missing "
                f"({format_closest(label_branch, branches)})\nin file {where}"
            )
    return names


def _merge_branch(specs: Sequence[dict], name: str) -> dict:
    """Combine one branch's statistics over files (exact for count/mean/std/min/max/hist)."""
    count, mean, m2 = 0, 0.0, 0.0
    lo, hi = math.inf, -math.inf
    hist = np.zeros(0, dtype=np.int64)
    quantiles, discrete = [], True
    for s in specs:
        b = s["branches"][name]
        n = b["count"]
        if n and b["kind"] != "category":
            quantiles.append((n, b.get("quantiles")))
            discrete = discrete and b.get("unique") is not None
            b_m2 = (b["std"] ** 2) * n
            total = count + n
            delta = b["mean"] - mean
            mean += delta * n / total
            m2 += b_m2 + delta * delta * count * n / total
            count = total
            lo, hi = min(lo, b["min"]), max(hi, b["max"])
        if b["kind"] == "jagged":
            hist = add_histogram(hist, np.asarray(b["multiplicity"]["histogram"], dtype=np.int64))
    ref = specs[0]["branches"][name]
    if ref["kind"] == "category":
        return _merge_category(specs, name)
    if count == 0:  # empty or NaN everywhere: no information (see _without_empty)
        return {"kind": ref["kind"], "count": 0}
    out = {
        "kind": ref["kind"],
        "dtype": ref["dtype"],
        "count": count,
        "mean": mean,
        "std": math.sqrt(m2 / count),
        "min": lo,
        "max": hi,
        "range": _quantile_range(quantiles, lo, hi, discrete),
    }
    if ref["kind"] == "jagged":
        nonzero = np.flatnonzero(hist)
        out["collection"] = ref["collection"]
        out["multiplicity"] = {"histogram": hist, "max": int(nonzero[-1]) if nonzero.size else 0}
    return out


def _merge_category(specs: Sequence[dict], name: str) -> dict:
    branches = [s["branches"][name] for s in specs]
    return {
        "kind": "category",
        "dtype": "string",
        "count": sum(b["count"] for b in branches),
        "missing": sum(b["missing"] for b in branches),
        "categories": categories.merged_counts([b["categories"] for b in branches]),
    }


def _without_identifier_strings(names: Sequence[str], merged: dict[str, dict]) -> list[str]:
    """Drop the string fields that name records rather than sort them (a file name, a UUID,
    a checksum, a time in a format that is not ISO 8601): more distinct values than
    :data:`rootml.categories.MAX_DISTINCT`, or than half the records holding one, in one
    warning."""
    dropped = [n for n in names if merged[n]["kind"] == "category" and _names_records(merged[n])]
    if dropped:
        log.warning(
            "dropped %d string field(s) with a distinct value for most records or more than "
            "%d values (identifiers, not categories): %s; map them to a few values in "
            "preprocessing(rec), or exclude them, to say so",
            len(dropped),
            categories.MAX_DISTINCT,
            ", ".join(dropped),
        )
    return [n for n in names if n not in dropped]


def _names_records(m: dict) -> bool:
    values = m["categories"]
    if not values:
        return True
    return len(values) > categories.MAX_CATEGORIES and len(values) > 0.5 * m["count"]


def _without_empty(names: Sequence[str], merged: dict[str, dict], policy: str) -> list[str]:
    """Drop the branches with no finite value in any file (CMS NanoAOD has several: an
    optional collection never filled, a variable NaN in every event), all in one warning,
    or one error listing them all when ``policy`` is "error"."""
    empty = [n for n in names if merged[n]["count"] == 0]
    if not empty:
        return list(names)
    listed = ", ".join(empty)
    if policy == "error":
        raise DataError(
            f"{len(empty)} branch(es) have no finite value in any file: {listed};\n"
            "exclude them (exclude_branches, --exclude) or let merge drop them "
            "(features.empty_branches: drop)"
        )
    kept = [n for n in names if n not in empty]
    if not kept:
        raise DataError(
            f"every feature branch is empty or NaN in every file ({listed}); check the tree "
            "and the branch selection"
        )
    log.warning(
        "dropped %d branch(es) with no finite value in any file (empty or NaN everywhere): %s",
        len(empty),
        listed,
    )
    return kept


def _say_missing(specs: Sequence[dict], names: Sequence[str]) -> None:
    """One line naming the numbers missing from some records (record files), which are
    padded as missing objects are."""
    missing = {}
    for name in names:
        count = sum(s["branches"][name].get("missing", 0) for s in specs)
        if count and specs[0]["branches"][name]["kind"] != "category":
            missing[name] = count
    if missing:
        log.info(
            "values missing from some records, padded as missing objects: %s",
            ", ".join(f"{name} {count:,}" for name, count in missing.items()),
        )


def _check_nan_policy(specs: Sequence[dict], names: Sequence[str], policy: str) -> None:
    """With the "error" policy, one error listing every branch holding NaN or inf values."""
    if policy != "error":
        return
    found: dict[str, list[int]] = {}
    where: dict[str, str] = {}
    for s in specs:
        for name in names:
            b = s["branches"][name]
            if b.get("nan") or b.get("inf"):
                counts = found.setdefault(name, [0, 0])
                counts[0] += b["nan"]
                counts[1] += b["inf"]
                where.setdefault(name, s["file"]["url"])
    if not found:
        return
    listed = "\n".join(
        f"  {n}: {nan} NaN, {inf} inf (first in {where[n]})" for n, (nan, inf) in found.items()
    )
    raise DataError(
        f"{len(found)} branch(es) hold NaN or inf values:\n{listed}\n"
        "choose what to do with them: nan_policy 'drop' (drop those events) or 'replace' "
        "(treat them as missing, i.e. the padding value) as --nan-policy on the command line "
        "or features.nan_policy in input.yml, or exclude the branches"
    )


def _labels(
    specs: Sequence[dict], labels: Sequence[str] | None, label_branch: str | None
) -> tuple[list[str], list[int] | None]:
    if label_branch:
        if _is_category(specs, label_branch):
            return _category_labels(specs, label_branch), None
        values: set = set()
        for s in specs:
            b = s["branches"][label_branch]
            if b["kind"] != "flat" or b.get("unique") is None:
                raise DataError(
                    f"label branch {label_branch!r} must be a flat integer or bool branch with "
                    "at most 64 distinct values (class ids), or a record field of class names "
                    f"(strings), in every file; it is {b['kind']} {b.get('dtype') or ''} here "
                    "(a float label: make it an integer, e.g. in preprocessing(rec))"
                    f"\nin file {s['file']['url']}"
                )
            values.update(int(v) for v in b["unique"])
        classes = [str(v) for v in sorted(values)]
        _need_two(classes, f"branch {label_branch!r}")
        return classes, None
    assert labels is not None
    texts = [str(v).strip() for v in labels]
    try:
        ordered = sorted(set(texts), key=int)
        texts = [str(int(t)) for t in texts]
        ordered = [str(int(t)) for t in ordered]
    except ValueError:
        ordered = sorted(set(texts))
    _need_two(ordered, "the file labels (labels.txt, input.yml labels or --labels)")
    index = {c: i for i, c in enumerate(ordered)}
    return ordered, [index[t] for t in texts]


def _is_category(specs: Sequence[dict], branch: str | None) -> bool:
    return bool(branch) and specs[0]["branches"][branch]["kind"] == "category"


def _category_labels(specs: Sequence[dict], label_branch: str) -> list[str]:
    """The classes of a string label field: its values, sorted (a record without one cannot
    be trained on)."""
    for s in specs:
        b = s["branches"][label_branch]
        where = f"label field {label_branch!r} in file {s['file']['url']}"
        if b["kind"] != "category" or b["categories"] is None:
            raise DataError(
                f"{where} must hold class names (strings, at most {categories.MAX_DISTINCT} "
                "distinct) or class ids (integers) in every file"
            )
        if b["missing"]:
            raise DataError(
                f"{where} is missing in {b['missing']} record(s); drop them with a selection "
                "or return None for them from preprocessing(rec)"
            )
    merged = categories.merged_counts([s["branches"][label_branch]["categories"] for s in specs])
    classes = sorted(merged or {})
    if len(classes) > 64:
        raise DataError(
            f"label field {label_branch!r} has {len(classes)} distinct values; a classifier "
            "takes at most 64 classes: map them to fewer in preprocessing(rec)"
        )
    _need_two(classes, f"label field {label_branch!r}")
    return classes


def _need_two(classes: Sequence[str], where: str) -> None:
    if len(classes) < 2:
        raise ConfigError(
            f"only one class ({', '.join(classes) or 'none'}) in {where}; a classifier needs at "
            "least two: add files of another class, or take labels from a branch"
        )


def _quantile_range(
    quantiles: Sequence[tuple[int, dict | None]], lo: float, hi: float, discrete: bool
) -> tuple[float, float]:
    """The merged 0.1 % and 99.9 % quantiles (:data:`QUANTILE_RANGE`) of a branch's values
    over all files: the files' quantile functions mixed by their counts of values. A branch
    with few distinct integer values (a flag, a charge, a small count), or files written
    before the specs kept quantiles, keep the exact min and max."""
    if discrete or not quantiles or any(q is None for _, q in quantiles):
        return lo, hi
    grid = np.unique(np.concatenate([q["values"] for _, q in quantiles]))
    cdf = np.zeros(grid.size)
    for n, q in quantiles:
        cdf += n * np.interp(grid, q["values"], q["probs"], left=0.0, right=1.0)
    cdf /= sum(n for n, _ in quantiles)
    q_lo, q_hi = (float(v) for v in np.interp(QUANTILE_RANGE, cdf, grid))
    return (q_lo, q_hi) if q_hi > q_lo else (lo, hi)


def _scaling(name: str, m: dict, kind: str) -> tuple[float, float]:
    if kind in ("minmax", "quantile"):
        low, high = (m["min"], m["max"]) if kind == "minmax" else m["range"]
        span = high - low
        return float(low), (1.0 / span if span > 0 else 1.0)
    if kind == "standard":
        return float(m["mean"]), (1.0 / m["std"] if m["std"] > 0 else 1.0)
    raise ConfigError(
        f"unknown scaling {kind!r} for branch {name!r}; use 'quantile', 'minmax' or 'standard'"
    )


def _cap(name: str, m: dict, settings: Settings) -> int:
    spec = settings.jagged_caps.get(
        name, settings.jagged_caps.get(m["collection"], settings.jagged_cap)
    )
    hist = m["multiplicity"]["histogram"]
    if isinstance(spec, int) and not isinstance(spec, bool):
        cap = spec
    elif spec == "max":
        cap = m["multiplicity"]["max"]
    elif spec == "auto":
        cap = auto_cap(hist, m["multiplicity"]["max"])
    elif isinstance(spec, str) and spec.startswith("p"):
        try:
            q = float(spec[1:]) / 100  # p99 -> 0.99, p99.9 -> 0.999
        except ValueError:
            q = -1.0
        if not 0 < q <= 1:
            raise ConfigError(
                f"jagged cap {spec!r} for branch {name!r} is not a quantile; use e.g. p99 or p99.9"
            )
        cap = histogram_quantile(hist, q)
    else:
        raise ConfigError(
            f"jagged cap {spec!r} for branch {name!r}: use auto, max, pNN or an integer"
        )
    return max(int(cap), 1)


#: ``auto`` caps a collection at the busiest event unless that is more than this many times
#: the 99.9th percentile of the multiplicity (one outlier event would decide the row width)
AUTO_CAP_SPREAD = 2


def auto_cap(histogram, most: int) -> int:
    """The default jagged cap: every object of every event where the tail is short (the
    benchmark samples: 0.001-0.002 better AUC than p99.9, docs/padding.md), else twice the
    99.9th percentile, so that a few outlier events do not make rows thousands wide."""
    typical = max(histogram_quantile(histogram, 0.999), 1)
    return min(most, AUTO_CAP_SPREAD * typical)


def truncated_fraction(histogram, cap: int) -> float:
    """The fraction of events with more objects than ``cap`` (their extra objects dropped)."""
    hist = np.asarray(histogram, dtype=np.int64)
    total = int(hist.sum())
    return float(hist[cap + 1 :].sum() / total) if total else 0.0


def allocate_events(entries: Sequence[int], nevts: int) -> list[int]:
    """Events used per file: all (nevts = -1), or ``nevts`` shared in proportion to the
    files' sizes with largest-remainder rounding, as MLaaS4HEP drew them."""
    total = sum(entries)
    if nevts == -1 or nevts >= total:
        if nevts > total:
            log.warning("nevts=%d is more than the %d events in the files; using all", nevts, total)
        return list(entries)
    exact = [nevts * e / total for e in entries]
    used = [math.floor(x) for x in exact]
    order = sorted(range(len(entries)), key=lambda i: (used[i] - exact[i], i))
    for i in order[: nevts - sum(used)]:
        used[i] += 1
    return [min(u, e) for u, e in zip(used, entries, strict=True)]


#: ``chunk_size: auto``: at least this many events per shard, more while a shard's float32 rows
#: stay under :data:`AUTO_CHUNK_BYTES` (narrow rows: a shard per 10k entries of a 4-byte branch
#: made 1,000 files of 40 kB for 10M entries, each costing more to write than its rows)
AUTO_CHUNK_EVENTS = 10_000
AUTO_CHUNK_BYTES = 8 << 20


def auto_chunk(chunk_size: int | str, dim: int) -> int:
    """Events per shard for ``chunk_size`` (``auto`` resolved for rows ``dim`` wide)."""
    if chunk_size != "auto":
        return int(chunk_size)
    return max(AUTO_CHUNK_EVENTS, AUTO_CHUNK_BYTES // (4 * max(dim, 1)))


def chunk_plan(used: Sequence[int], chunk_size: int) -> list[dict]:
    """Consecutive entry ranges of at most ``chunk_size`` per file (-1: one chunk per file)."""
    chunks = []
    for f, n in enumerate(used):
        step = n if chunk_size == -1 else chunk_size
        for start in range(0, n, max(step, 1)):
            chunks.append(
                {"id": len(chunks), "file": f, "start": start, "stop": min(start + step, n)}
            )
    return chunks


def job_batches(chunks: Sequence[dict], max_jobs: int, min_events: int = 100_000) -> list[str]:
    """The chunk plan cut into at most ``max_jobs`` contiguous ranges ("a-b") of similar size.

    One preprocess job per range: a million-event input becomes a handful of jobs, not
    thousands, and a small input one job (fewer than ``min_events`` events per job is not
    worth a process start-up). Ranges are in plan order and cover every chunk exactly once.
    """
    if max_jobs < 1:
        raise LayoutError(f"the number of preprocess jobs must be at least 1, got {max_jobs}")
    if not chunks:
        raise LayoutError("the chunk plan is empty: no events were selected from the files")
    sizes = [c["stop"] - c["start"] for c in chunks]
    total = sum(sizes)
    n_jobs = max(1, min(max_jobs, len(chunks), -(-total // max(min_events, 1))))
    ranges, first, done = [], 0, 0
    for i, size in enumerate(sizes):
        done += size
        # close a range once it reaches its share of the events, leaving a chunk for each
        # range still to come
        target = total * (len(ranges) + 1) / n_jobs
        left = len(sizes) - i - 1
        if len(ranges) < n_jobs - 1 and (done >= target or left == n_jobs - 1 - len(ranges)):
            ranges.append((first, i))
            first = i + 1
    ranges.append((first, len(sizes) - 1))
    return [f"{chunks[a]['id']}-{chunks[b]['id']}" for a, b in ranges]

"""Metrics of a classifier on its held-out test split, as pure functions on NumPy arrays.

Nothing here reads or writes files: ``rootml evaluate`` streams the shards, runs the model,
and hands the labels and scores to these functions; :mod:`rootml.report` draws the results.

Scores follow one convention. A binary model gives a 1-D array of P(class 1) (a sigmoid
output); a model with k >= 3 classes gives [n, k] probabilities (a softmax output).
:func:`as_probabilities` turns either into [n, k] columns.

The ROC curve is exact: scores are sorted once and every distinct score is a threshold, so
tied scores move the curve diagonally and the area equals the Mann-Whitney rank statistic
P(score of a positive > score of a negative) + P(tie) / 2.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .exceptions import ConfigError, DataError

log = logging.getLogger(__name__)

#: probabilities are clipped to [EPS, 1 - EPS] in the log loss, as Keras does
EPS = 1e-7
#: at most this many points per ROC curve in the metrics JSON (end points always kept)
ROC_POINTS = 200
#: a KS p-value below this flags overtraining
KS_ALPHA = 0.01
#: ks_2samp computes exact p-values up to this sample size, the asymptotic formula above it
KS_EXACT_MAX_N = 1000


# ------------------------------------------------------------------ input checks


def _check_classes(classes: Sequence[str]) -> list[str]:
    names = [str(c) for c in classes]
    if len(names) < 2:
        raise ConfigError(
            f"a classifier needs at least two class names, got {names!r}; "
            "give one label per class of input files"
        )
    dups = sorted({c for c in names if names.count(c) > 1})
    if dups:
        raise ConfigError(f"class names must be unique, {dups!r} appear more than once")
    return names


def check_labels(y: Any, n_classes: int, what: str = "labels") -> np.ndarray:
    """``y`` as 1-D int64 class indices in [0, n_classes); :class:`DataError` otherwise."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise DataError(f"{what} must be a 1-D array of class indices, got shape {arr.shape}")
    if arr.dtype.kind == "b":
        arr = arr.astype(np.int64)
    elif arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise DataError(f"{what} must be whole numbers (class indices), got {arr.dtype} values")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "iu":
        raise DataError(f"{what} must be integer class indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.min() < 0 or arr.max() >= n_classes):
        bad = arr[(arr < 0) | (arr >= n_classes)][0]
        raise DataError(
            f"{what} hold class index {int(bad)}, outside 0..{n_classes - 1} for "
            f"{n_classes} classes; the class list does not match the labels of the shards"
        )
    return arr


def _check_finite(values: np.ndarray, what: str) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        n_nan = int(np.isnan(values).sum())
        first = int(np.flatnonzero(bad.reshape(len(values), -1).any(axis=1))[0])
        raise DataError(
            f"{what} contain {int(bad.sum())} non-finite values ({n_nan} NaN), the first in "
            f"row {first}; the model produced NaN/inf: check the inputs for NaN/inf and that "
            "the training loss stayed finite"
        )


def as_probabilities(scores: Any, n_classes: int) -> np.ndarray:
    """Scores as [n, n_classes] float64 probabilities.

    Binary (``n_classes == 2``): a 1-D array (or [n, 1]) of P(class 1) becomes the columns
    ``[1 - p, p]``; [n, 2] is taken as it is. Multi-class: [n, k] is required. NaN/inf,
    values outside [0, 1] and multi-class rows that do not sum to 1 raise :class:`DataError`.
    """
    s = np.asarray(scores, dtype=np.float64)
    if n_classes < 2:
        raise ConfigError(f"a classifier needs at least two classes, got n_classes={n_classes}")
    if n_classes == 2 and (s.ndim == 1 or (s.ndim == 2 and s.shape[1] == 1)):
        p = s.reshape(-1)
        _check_finite(p, "scores")
        _check_unit_interval(p)
        return np.column_stack([1.0 - p, p])
    if s.ndim != 2 or s.shape[1] != n_classes:
        want = "a 1-D array of P(class 1) or [n, 2]" if n_classes == 2 else f"[n, {n_classes}]"
        raise DataError(
            f"scores have shape {s.shape}, expected {want} for {n_classes} classes; "
            "the model's output width does not match the class list"
        )
    _check_finite(s, "scores")
    _check_unit_interval(s)
    if len(s):
        err = np.abs(s.sum(axis=1) - 1.0)
        if err.max() > 1e-3:
            row = int(np.argmax(err))
            raise DataError(
                f"score rows must sum to 1 (softmax probabilities), row {row} sums to "
                f"{s[row].sum():.6g}; pass the softmax output, not logits"
            )
    return s


def _check_unit_interval(p: np.ndarray) -> None:
    if p.size and (p.min() < 0.0 or p.max() > 1.0):
        raise DataError(
            f"scores must be probabilities in [0, 1], found values in "
            f"[{p.min():.6g}, {p.max():.6g}]; pass the sigmoid/softmax output, not logits"
        )


def _single_class_error(counts: np.ndarray, classes: list[str], where: str) -> DataError:
    present = [c for c, n in zip(classes, counts, strict=True) if n > 0]
    absent = [c for c, n in zip(classes, counts, strict=True) if n == 0]
    only = present[0]
    return DataError(
        f"AUC is undefined with a single class present: the {where} has "
        f"{int(counts.max())} events, all of class {only!r}, and none of "
        f"{', '.join(repr(c) for c in absent)}.\n"
        "Fix: add input files (and labels) of another class, or give the test split more "
        "events (a larger test fraction or more events per file)."
    )


# ------------------------------------------------------------------ ROC and AUC


def _roc_counts(y_true: Any, score: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative false and true positive counts at each distinct score, highest first,
    starting from (0, 0) at threshold +inf."""
    y = np.asarray(y_true)
    s = np.asarray(score, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1 or len(y) != len(s):
        raise DataError(
            f"labels and scores must be 1-D arrays of one length, got shapes {y.shape} "
            f"and {s.shape}"
        )
    if y.dtype.kind != "b":
        values = np.unique(y)
        if not np.all(np.isin(values, (0, 1))):
            raise DataError(f"binary labels must be 0/1 or bool, got values {values[:5]}")
        y = y == 1
    _check_finite(s, "scores")
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    # the last position of each run of equal scores: a threshold takes a whole run
    ends = np.append(np.flatnonzero(np.diff(s_sorted)), len(s_sorted) - 1)
    tps = np.cumsum(y[order], dtype=np.int64)[ends] if len(s) else np.zeros(0, np.int64)
    fps = ends + 1 - tps
    n_pos = int(tps[-1]) if len(tps) else 0
    n_neg = int(fps[-1]) if len(fps) else 0
    if n_pos == 0 or n_neg == 0:
        which = "positive (1)" if n_pos == 0 else "negative (0)"
        raise DataError(
            f"a ROC curve needs events of both classes, the {len(s)} labels hold no "
            f"{which} events; AUC is undefined with a single class present"
        )
    zero = np.zeros(1, np.int64)
    thresholds = np.concatenate([[np.inf], s_sorted[ends]])
    return np.concatenate([zero, fps]), np.concatenate([zero, tps]), thresholds


def roc_curve(y_true: Any, score: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The exact ROC curve of binary labels (0/1 or bool) against scores.

    Returns ``(fpr, tpr, thresholds)``: point i counts events with ``score >= thresholds[i]``
    as positive. The first point is (0, 0) at threshold ``inf``; the last is (1, 1). Every
    distinct score is one point, so tied scores make one diagonal step. Raises
    :class:`DataError` if both classes are not present or a score is NaN/inf.
    """
    fps, tps, thresholds = _roc_counts(y_true, score)
    return fps / fps[-1], tps / tps[-1], thresholds


def auc(fpr: Any, tpr: Any) -> float:
    """Area under a curve by the trapezoid rule; ``fpr`` must be non-decreasing."""
    x = np.asarray(fpr, dtype=np.float64)
    y = np.asarray(tpr, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or len(x) < 2:
        raise ValueError(f"fpr and tpr must be 1-D of one length >= 2, got {x.shape}, {y.shape}")
    dx = np.diff(x)
    if np.any(dx < 0):
        raise ValueError("fpr must be non-decreasing (as roc_curve returns it)")
    return float(np.sum(dx * (y[1:] + y[:-1])) / 2.0)


def roc_auc(y_true: Any, score: Any) -> float:
    """Area under the exact ROC curve: the Mann-Whitney statistic U / (n_pos * n_neg).

    It is computed from integer counts, so it is exact up to one final division.
    """
    fps, tps, _ = _roc_counts(y_true, score)
    twice_area = int(np.sum(np.diff(fps) * (tps[1:] + tps[:-1])))
    return twice_area / (2.0 * int(fps[-1]) * int(tps[-1]))


def weighted_roc_auc(y_true: Any, score: Any, weight: Any) -> float:
    """Area under the ROC curve of binary labels when each event counts by its weight (the
    rates are sums of weights; negative weights, as NLO generators write, are allowed).
    With unit weights it equals :func:`roc_auc`; with integer weights, the AUC of the events
    repeated that many times. Raises :class:`DataError` when a class weighs <= 0."""
    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    w = np.asarray(weight, dtype=np.float64).ravel()
    order = np.argsort(-s, kind="stable")
    y, s, w = y[order], s[order], w[order]
    ends = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last event of each distinct score
    tp, fp = np.cumsum(w * y)[ends], np.cumsum(w * ~y)[ends]
    if len(ends) == 0 or tp[-1] <= 0 or fp[-1] <= 0:
        raise DataError(
            "a weighted ROC needs both classes with a positive total weight; check the weights"
        )
    tpr, fpr = np.r_[0.0, tp / tp[-1]], np.r_[0.0, fp / fp[-1]]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2)


def weighted_metrics(y: Any, scores: Any, weights: Any, classes: Sequence[str]) -> dict:
    """What the event weights change: the weighted AUC (binary; the one-vs-rest macro mean
    for several classes), the total weight per class and the effective number of events
    (sum w)^2 / sum w^2, the size of an unweighted sample as precise."""
    y = np.asarray(y).astype(np.int64)
    w = np.asarray(weights, dtype=np.float64)
    probs = as_probabilities(scores, len(classes))
    out: dict[str, Any] = {
        "sum_weights": {c: float(w[y == i].sum()) for i, c in enumerate(classes)},
        "n_effective": float(w.sum() ** 2 / max(float((w * w).sum()), 1e-300)),
    }
    if len(classes) == 2:
        out["auc_weighted"] = weighted_roc_auc(y == 1, probs[:, 1], w)
    else:
        per = [weighted_roc_auc(y == i, probs[:, i], w) for i in range(len(classes))]
        out["auc_macro_weighted"] = float(np.mean(per))
    return out


def _downsample(fpr: np.ndarray, tpr: np.ndarray, max_points: int) -> np.ndarray:
    """Indices of at most ``max_points`` points spread evenly along the curve (by
    fpr + tpr, which grows monotonically from 0 to 2), first and last always kept."""
    n = len(fpr)
    if n <= max_points:
        return np.arange(n)
    along = fpr + tpr
    targets = np.linspace(0.0, 2.0, max_points)[1:-1]
    inner = np.searchsorted(along, targets, side="left")
    return np.unique(np.concatenate([[0], inner, [n - 1]]))


def _curve_json(fpr: np.ndarray, tpr: np.ndarray, thr: np.ndarray, max_points: int) -> dict:
    keep = _downsample(fpr, tpr, max_points)
    return {
        "fpr": [float(v) for v in fpr[keep]],
        "tpr": [float(v) for v in tpr[keep]],
        # the first threshold is +inf (nothing selected), which JSON writes as null
        "thresholds": [None if np.isinf(v) else float(v) for v in thr[keep]],
    }


# ------------------------------------------------------------------ the metrics document


def compute_metrics(
    y: Any, scores: Any, classes: Sequence[str], *, roc_points: int = ROC_POINTS
) -> dict[str, Any]:
    """Metrics of the test split as a JSON-ready dict.

    Keys: ``classes``, ``n_test``, ``counts`` (events per class), ``accuracy`` (binary:
    P(class 1) > 0.5; multi-class: argmax), ``log_loss`` (probabilities clipped to
    [1e-7, 1 - 1e-7], as Keras does), ``confusion_matrix`` (rows true, columns predicted),
    and ``roc``: one curve per class as ``{"fpr", "tpr", "thresholds"}`` with at most
    ``roc_points`` points. Binary adds ``auc`` and ``positive_class`` (``roc`` then has the
    one curve of ``classes[1]``); multi-class adds ``auc_ovr`` (one vs rest, per class) and
    ``auc_macro`` (their unweighted mean).

    Raises :class:`DataError` for an empty test split, NaN/inf scores, or a class with no
    test events (AUC is undefined).
    """
    names = _check_classes(classes)
    k = len(names)
    if roc_points < 2:
        raise ValueError(f"roc_points must be >= 2, got {roc_points}")
    labels = check_labels(y, k)
    if len(labels) == 0:
        raise DataError("the test split is empty (0 events); raise the test fraction or add events")
    proba = as_probabilities(scores, k)
    if len(proba) != len(labels):
        raise DataError(
            f"{len(labels)} labels but {len(proba)} score rows; each test event needs one score row"
        )
    counts = np.bincount(labels, minlength=k)
    if np.count_nonzero(counts) < 2:
        raise _single_class_error(counts, names, "test split")
    if k > 2 and np.any(counts == 0):
        missing = [c for c, n in zip(names, counts, strict=True) if n == 0]
        raise DataError(
            f"one-vs-rest AUC is undefined for class {missing[0]!r}: the test split has no "
            f"events of {', '.join(repr(c) for c in missing)} ({len(labels)} test events).\n"
            "Fix: check the input files and labels of that class, or give the test split "
            "more events (a larger test fraction or more events per file)."
        )

    predicted = (proba[:, 1] > 0.5).astype(np.int64) if k == 2 else np.argmax(proba, axis=1)
    p_true = np.clip(proba[np.arange(len(labels)), labels], EPS, 1.0 - EPS)
    confusion = np.bincount(labels * k + predicted, minlength=k * k).reshape(k, k)

    out: dict[str, Any] = {
        "classes": names,
        "n_test": len(labels),
        "counts": {c: int(n) for c, n in zip(names, counts, strict=True)},
    }
    curves = {}
    if k == 2:
        fpr, tpr, thr = roc_curve(labels == 1, proba[:, 1])
        out["positive_class"] = names[1]
        out["auc"] = roc_auc(labels == 1, proba[:, 1])
        curves[names[1]] = _curve_json(fpr, tpr, thr, roc_points)
    else:
        aucs = {}
        for c, name in enumerate(names):
            fpr, tpr, thr = roc_curve(labels == c, proba[:, c])
            aucs[name] = roc_auc(labels == c, proba[:, c])
            curves[name] = _curve_json(fpr, tpr, thr, roc_points)
        out["auc_ovr"] = aucs
        out["auc_macro"] = float(np.mean(list(aucs.values())))
    out["accuracy"] = float(np.mean(predicted == labels))
    out["log_loss"] = float(-np.mean(np.log(p_true)))
    out["confusion_matrix"] = confusion.tolist()
    out["roc"] = curves
    log.info(
        "metrics: %d test events, %d classes, %s, accuracy %.4f",
        len(labels),
        k,
        f"AUC {out['auc']:.4f}" if k == 2 else f"macro AUC {out['auc_macro']:.4f}",
        out["accuracy"],
    )
    return out


# ------------------------------------------------------------------ overtraining


def _class_score(proba: np.ndarray, c: int) -> np.ndarray:
    """The score looked at for true class c: P(class 1) when binary, P(class c) otherwise."""
    return proba[:, 1] if proba.shape[1] == 2 else proba[:, c]


def ks_overtraining(
    train_scores: Any,
    train_y: Any,
    test_scores: Any,
    test_y: Any,
    classes: Sequence[str],
    *,
    alpha: float = KS_ALPHA,
) -> dict[str, Any]:
    """Compare train and test score distributions per class with a two-sample KS test.

    For each true class c the compared score is P(class 1) (binary) or P(class c)
    (multi-class). A p-value below ``alpha`` flags overtraining: the model scores events it
    was trained on differently from unseen ones. With very large samples the test also
    flags differences too small to matter; read it together with the score plot.

    Returns ``{"alpha", "per_class": {name: {"statistic", "pvalue", "n_train", "n_test",
    "score", "overtraining_suspected"}}, "overtraining_suspected", "verdict"}``.
    """
    from scipy.stats import ks_2samp

    names = _check_classes(classes)
    k = len(names)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    p_train = as_probabilities(train_scores, k)
    p_test = as_probabilities(test_scores, k)
    y_train = check_labels(train_y, k, "training labels")
    y_test = check_labels(test_y, k, "test labels")
    for what, p, lab in (("training", p_train, y_train), ("test", p_test, y_test)):
        if len(p) != len(lab):
            raise DataError(f"{len(lab)} {what} labels but {len(p)} {what} score rows")

    per_class: dict[str, dict[str, Any]] = {}
    for c, name in enumerate(names):
        a = _class_score(p_train, c)[y_train == c]
        b = _class_score(p_test, c)[y_test == c]
        if len(a) == 0 or len(b) == 0:
            where = "training" if len(a) == 0 else "test"
            raise DataError(
                f"the KS overtraining test needs events of class {name!r} in both splits, "
                f"the {where} split has none; add events of that class or raise the "
                f"{where} fraction"
            )
        method = "exact" if max(len(a), len(b)) <= KS_EXACT_MAX_N else "asymp"
        res = ks_2samp(a, b, method=method)
        pvalue = float(res.pvalue)
        per_class[name] = {
            "score": f"P({names[1] if k == 2 else name})",
            "statistic": float(res.statistic),
            "pvalue": pvalue,
            "n_train": len(a),
            "n_test": len(b),
            "overtraining_suspected": bool(pvalue < alpha),
        }
    flagged = [n for n, r in per_class.items() if r["overtraining_suspected"]]
    if flagged:
        detail = ", ".join(f"{n!r} (p = {per_class[n]['pvalue']:.2g})" for n in flagged)
        verdict = (
            f"Overtraining suspected: train and test scores differ for {detail} at "
            f"p < {alpha:g}. Consider more training events, stronger regularisation or "
            "early stopping."
        )
    else:
        lowest = min(r["pvalue"] for r in per_class.values())
        verdict = (
            f"No sign of overtraining: train and test scores agree for every class "
            f"(lowest KS p = {lowest:.2g} >= {alpha:g})."
        )
    return {
        "alpha": alpha,
        "per_class": per_class,
        "overtraining_suspected": bool(flagged),
        "verdict": verdict,
    }


# ------------------------------------------------------------------ input distributions


class FeatureHistograms:
    """Per-class histograms of every input feature, accumulated over streamed batches.

    Each feature gets ``bins`` equal bins over [lo, hi] (a bin holds ``edges[i] <= v <
    edges[i + 1]``, the last one also ``v == hi``). Values equal to ``pad`` are counted as
    missing; any other value outside [lo, hi], or NaN, is counted as ``outside`` (the
    preprocessing clips, so this should stay zero). Memory is ``classes x features x
    (bins + 2)`` counters, whatever the number of rows.
    """

    def __init__(
        self,
        features: Sequence[str],
        lo: float,
        hi: float,
        pad: float,
        classes: Sequence[str],
        bins: int = 40,
    ) -> None:
        if not lo < hi:
            raise ValueError(f"need lo < hi, got lo={lo}, hi={hi}")
        if bins < 1:
            raise ValueError(f"bins must be >= 1, got {bins}")
        self.features = [str(f) for f in features]
        self.classes = _check_classes(classes)
        self.lo, self.hi, self.bins = float(lo), float(hi), int(bins)
        self.pad = float(np.float32(pad))  # as the float32 rows hold it (-0.01 is inexact)
        self.edges = np.linspace(self.lo, self.hi, self.bins + 1)
        # slot layout per (class, feature): bins histogram slots, then missing, then outside
        self._table = np.zeros((len(self.classes), len(self.features), self.bins + 2), np.int64)

    @property
    def counts(self) -> np.ndarray:
        """In-range counts, [classes, features, bins]."""
        return self._table[:, :, : self.bins]

    @property
    def missing(self) -> np.ndarray:
        """Values equal to ``pad``, [classes, features]."""
        return self._table[:, :, self.bins]

    @property
    def outside(self) -> np.ndarray:
        """Other values outside [lo, hi] or NaN, [classes, features]."""
        return self._table[:, :, self.bins + 1]

    @property
    def n_events(self) -> np.ndarray:
        """Rows seen per class."""
        return (
            self._table[:, 0, :].sum(axis=1)
            if self.features
            else np.zeros(len(self.classes), np.int64)
        )

    def add(self, x: Any, y: Any) -> None:
        """Count a batch: ``x`` [n, features] values, ``y`` [n] class indices."""
        x = np.asarray(x)
        d = len(self.features)
        if x.ndim != 2 or x.shape[1] != d:
            raise DataError(
                f"rows must have shape [n, {d}] (one column per feature), got {x.shape}"
            )
        labels = check_labels(y, len(self.classes))
        if len(labels) != len(x):
            raise DataError(f"{len(x)} rows but {len(labels)} labels in one batch")
        if len(x) == 0 or d == 0:
            return
        v = x.astype(np.float64, copy=False)
        slot = np.searchsorted(self.edges, v, side="right") - 1
        slot[v == self.hi] = self.bins - 1
        inside = (v >= self.lo) & (v <= self.hi)
        slot[~inside] = self.bins + 1  # NaN compares False, so it lands here too
        slot[v == self.pad] = self.bins
        width = self.bins + 2
        offset = (labels[:, None] * d + np.arange(d)[None, :]) * width
        flat = np.bincount((offset + slot).ravel(), minlength=self._table.size)
        self._table += flat.reshape(self._table.shape)

    def to_json(self) -> dict[str, Any]:
        """The counts as a JSON-ready dict (read back with :meth:`from_json`)."""
        return {
            "features": self.features,
            "classes": self.classes,
            "lo": self.lo,
            "hi": self.hi,
            "pad": self.pad,
            "bins": self.bins,
            "edges": self.edges.tolist(),
            "n_events": {c: int(n) for c, n in zip(self.classes, self.n_events, strict=True)},
            "counts": {c: self.counts[i].tolist() for i, c in enumerate(self.classes)},
            "missing": {c: self.missing[i].tolist() for i, c in enumerate(self.classes)},
            "outside": {c: self.outside[i].tolist() for i, c in enumerate(self.classes)},
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> FeatureHistograms:
        """Rebuild an accumulator from :meth:`to_json` output."""
        try:
            h = cls(doc["features"], doc["lo"], doc["hi"], doc["pad"], doc["classes"], doc["bins"])
            for i, c in enumerate(h.classes):
                h._table[i, :, : h.bins] = np.asarray(doc["counts"][c], dtype=np.int64)
                h._table[i, :, h.bins] = np.asarray(doc["missing"][c], dtype=np.int64)
                h._table[i, :, h.bins + 1] = np.asarray(doc["outside"][c], dtype=np.int64)
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"not a feature histogram document: {err!r}") from None
        return h

"""Histograms of object counts per event (the multiplicity of a jagged branch): the per-file
summary the specs stage writes and the merged quantile that sets a collection's cap."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def multiplicity_summary(histogram: np.ndarray) -> dict:
    """Max, mean and quantiles (p50, p99, p99.9) from a histogram of object counts."""
    histogram = np.asarray(histogram, dtype=np.int64)
    total = int(histogram.sum())
    nonzero = np.flatnonzero(histogram)
    out = {
        "max": int(nonzero[-1]) if nonzero.size else 0,
        "mean": float((np.arange(histogram.size) * histogram).sum() / total) if total else 0.0,
    }
    for key, q in (("p50", 0.5), ("p99", 0.99), ("p999", 0.999)):
        out[key] = histogram_quantile(histogram, q)
    out["histogram"] = [int(h) for h in histogram]
    return out


def histogram_quantile(histogram: Sequence[int] | np.ndarray, q: float) -> int:
    """The smallest multiplicity m with at least a fraction ``q`` of events having <= m."""
    cum = np.cumsum(np.asarray(histogram, dtype=np.int64))
    if cum.size == 0 or cum[-1] == 0:
        return 0
    return int(np.searchsorted(cum, q * cum[-1] - 1e-9, side="left"))


def add_histogram(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    size = max(a.size, b.size)
    return np.pad(a, (0, size - a.size)) + np.pad(b, (0, size - b.size))

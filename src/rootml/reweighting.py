"""Kinematic reweighting: each class's events reweighted so that its distribution in one or two
variables matches a target (another class, or flat), by the ratio of histograms.

``input.yml``::

    reweight:
      variables: [lead_jet_pt, ht_jets]        # one or two per-event names (branches or new variables)
      bins: [[0, 50, 100, 200, 1000], [0, 300, 600, 2000]]   # bin edges, one list per variable
      target: flat                             # or a class label: reweight the others to it

specs histograms each file's events that pass (weighted by the event weight), merge sums them
per class (times each file's weight), and the layout keeps the factors; preprocess multiplies
each row's weight by its class's factor in its bin. Values outside the edges count in the
first or last bin. A bin where a class has no weight gets factor 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .exceptions import ConfigError

FLAT = "flat"


def check_config(doc: Any) -> None:
    """Refuse a ``reweight`` section rootml cannot use, naming the key and the fix."""
    if not isinstance(doc, Mapping) or set(doc) - {"variables", "bins", "target"}:
        extra = (
            sorted(set(doc) - {"variables", "bins", "target"}) if isinstance(doc, Mapping) else doc
        )
        raise ConfigError(f"reweight takes variables, bins and target, got {extra!r}")
    names, bins = doc.get("variables"), doc.get("bins")
    if not isinstance(names, list) or not 1 <= len(names) <= 2:
        raise ConfigError("reweight.variables must list one or two per-event names")
    if not isinstance(bins, list) or len(bins) != len(names):
        raise ConfigError(f"reweight.bins needs one list of edges per variable ({len(names)})")
    for name, edges in zip(names, bins, strict=True):
        e = np.asarray(edges, dtype=np.float64)
        if e.ndim != 1 or len(e) < 2 or not np.all(np.diff(e) > 0) or not np.isfinite(e).all():
            raise ConfigError(
                f"reweight.bins for {name!r} must be at least two finite, increasing edges, "
                f"got {edges!r}"
            )
    if not isinstance(doc.get("target", FLAT), str):
        raise ConfigError("reweight.target must be 'flat' or a class label (a string)")


def bin_index(values: Sequence[np.ndarray], bins: Sequence[Sequence[float]]) -> tuple:
    """Each event's bin per variable (values outside the edges in the first or last bin)."""
    return tuple(
        np.clip(np.searchsorted(np.asarray(e), np.asarray(v), side="right") - 1, 0, len(e) - 2)
        for v, e in zip(values, bins, strict=True)
    )


def histogram(
    values: Sequence[np.ndarray], bins: Sequence[Sequence[float]], weights: np.ndarray | None
) -> np.ndarray:
    """The (weighted) counts of events per bin; NaN values are not counted."""
    shape = tuple(len(e) - 1 for e in bins)
    finite = np.logical_and.reduce([np.isfinite(np.asarray(v, dtype=np.float64)) for v in values])
    index = tuple(i[finite] for i in bin_index(values, bins))
    w = np.ones(int(finite.sum())) if weights is None else np.asarray(weights, np.float64)[finite]
    out = np.zeros(shape)
    np.add.at(out, index, w)
    return out


def factors(per_class: Mapping[str, np.ndarray], target: str) -> dict[str, np.ndarray]:
    """Per class, the factor per bin that makes its histogram the target's shape (flat: every
    bin the same total), keeping the class's total weight."""
    if target != FLAT and target not in per_class:
        raise ConfigError(
            f"reweight.target {target!r} is not a class; use 'flat' or one of {sorted(per_class)}"
        )
    out = {}
    for c, h in per_class.items():
        total = h.sum()
        if target == FLAT:
            goal = np.where(h > 0, total / max(int((h > 0).sum()), 1), 0.0)
        elif c == target:
            out[c] = np.ones_like(h)
            continue
        else:
            t = per_class[target]
            goal = t / t.sum() * total if t.sum() > 0 else np.zeros_like(h)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[c] = np.where(h > 0, goal / h, 0.0)
    return out

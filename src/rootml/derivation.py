"""Selections and new variables, applied to the arrays of one read.

What ``input.yml`` declares (``selection``, ``object_selection``, ``new_variables``; the
grammar is docs/expressions.md) becomes a :class:`Derivation`, applied in one order
everywhere the data path meets raw branches (specs, preprocess, predict, a served event):

1. object selections filter their collection: every branch of it keeps the objects that pass
   (before padding, so caps and counts describe the objects trained on);
2. new variables are computed, each from branches and the variables before it;
3. the event selection keeps the events that pass (specs and preprocess only: a served or
   predicted event is scored whatever it holds, since selections pick training data).

The layout carries the derivation (``layout["derived"]``) with the collection of every jagged
branch it reads, so preprocess and a server repeat exactly what specs did.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import awkward as ak
import numpy as np

from .exceptions import ExpressionError
from .expressions import (
    Expression,
    Kind,
    check,
    conjuncts,
    evaluate,
    order,
    parse,
    per_object,
    require_event_level,
    require_object_level,
)


@dataclass(frozen=True)
class Derivation:
    """The parsed expressions, new variables in the order that defines each before its use."""

    selection: Expression | None = None
    object_cuts: tuple[tuple[str, Expression], ...] = ()
    variables: tuple[tuple[str, Expression], ...] = ()
    weight: Expression | None = None  # one number per event

    def __bool__(self) -> bool:
        return bool(self.selection or self.object_cuts or self.variables or self.weight)

    @property
    def new(self) -> list[str]:
        """The new variables' names."""
        return [name for name, _ in self.variables]

    def needs(self) -> list[str]:
        """The branches the expressions read (new variables excluded), first use first."""
        new = set(self.new)
        exprs = [e for _, e in self.object_cuts] + [e for _, e in self.variables]
        exprs += [e for e in (self.selection, self.weight) if e is not None]
        names = [n for e in exprs for n in e.names if n not in new]
        return list(dict.fromkeys(names))

    def to_json(self) -> dict:
        return {
            "selection": self.selection.source if self.selection else None,
            "object_selection": {c: e.source for c, e in self.object_cuts},
            "new_variables": {n: e.source for n, e in self.variables},
            "weight": self.weight.source if self.weight else None,
        }


def from_json(doc: Mapping | None, branches: Sequence[str] = ()) -> Derivation:
    """Parse ``{"selection", "object_selection", "new_variables"}`` (input.yml's keys, or a
    layout's ``derived``); ``branches`` are the file's names, which a new variable may not
    take."""
    doc = doc or {}
    selection = doc.get("selection")
    cuts = tuple(
        (coll, parse(text, f"object_selection.{coll}"))
        for coll, text in (doc.get("object_selection") or {}).items()
    )
    definitions = {
        name: parse(text, f"new_variables.{name}")
        for name, text in (doc.get("new_variables") or {}).items()
    }
    ordered = order(definitions, branches) if definitions else []
    weight = doc.get("weight")
    return Derivation(
        parse(selection, "selection") if selection else None,
        cuts,
        tuple((name, definitions[name]) for name in ordered),
        parse(weight, "weight") if weight else None,
    )


def check_kinds(
    derivation: Derivation, kinds: Mapping[str, Kind], collections: Sequence[str]
) -> dict[str, Kind]:
    """Check every expression against the branches' kinds (``kinds``: name -> :class:`Kind`;
    ``collections``: the file's collection names); return the new variables' kinds."""
    for coll, expr in derivation.object_cuts:
        if coll not in collections:
            known = ", ".join(sorted(collections)) or "none"
            raise ExpressionError(
                f"no collection {coll!r} in the file",
                expr.where,
                f"name one of its collections ({known}) in object_selection",
                expr.source,
            )
        require_object_level(expr, check(expr, kinds), coll)
    known = dict(kinds)
    new: dict[str, Kind] = {}
    for name, expr in derivation.variables:
        new[name] = known[name] = check(expr, known)
    if derivation.selection is not None:
        require_event_level(
            derivation.selection, check(derivation.selection, known), condition=True
        )
    if derivation.weight is not None:
        require_event_level(derivation.weight, check(derivation.weight, known))
    return new


@dataclass(frozen=True)
class Derived:
    """One read after the derivation: the columns (branches with their objects cut, new
    variables added), the entries kept (None: all), the counts of the cut flow, and the event
    weights of the entries kept (None without a weight expression)."""

    columns: dict[str, object]
    keep: np.ndarray | None
    cutflow: dict[str, int]
    weights: np.ndarray | None = None

    def arrays(self) -> ak.Array:
        """The columns as one record array, the events that passed only."""
        out = ak.zip(dict(self.columns), depth_limit=1)
        return out if self.keep is None else out[self.keep]


def apply(
    derivation: Derivation,
    arrays: ak.Array,
    collections: Mapping[str, str],
    *,
    select: bool = True,
) -> Derived:
    """Apply ``derivation`` to ``arrays`` (a record array of branches); ``collections`` maps
    each jagged branch to its collection. ``select=False`` skips the event selection."""
    n = len(arrays)
    columns: dict[str, object] = {name: arrays[name] for name in arrays.fields}
    cutflow = {"events": n}
    for coll, expr in derivation.object_cuts:
        members = [b for b, c in collections.items() if c == coll and b in columns]
        if not members:  # none of its branches is read: nothing to cut
            continue
        mask = per_object(evaluate(expr, columns, n), columns[members[0]])
        before = int(ak.sum(ak.num(columns[members[0]], axis=1)))
        counts = np.asarray(ak.num(mask, axis=1))
        for branch in members:
            # a branch whose name says this collection but whose objects are others (another
            # multiplicity, e.g. Jet_constituents) keeps its objects
            if np.array_equal(np.asarray(ak.num(columns[branch], axis=1)), counts):
                columns[branch] = columns[branch][mask]
        cutflow[f"{coll} objects"] = before
        cutflow[f"{coll} objects passing"] = int(ak.sum(ak.num(columns[members[0]], axis=1)))
    for name, expr in derivation.variables:
        columns[name] = evaluate(expr, columns, n)
    keep = None
    if select and derivation.selection is not None:
        terms = conjuncts(derivation.selection)
        if len(terms) == 1:
            keep = np.asarray(evaluate(derivation.selection, columns, n), dtype=bool)
        else:  # the cut flow term by term: the events passing each cut and those before it
            keep = np.ones(n, dtype=bool)
            for text, term in terms:
                keep &= np.asarray(evaluate(term, columns, n), dtype=bool)
                cutflow[f"passing {text}"] = int(keep.sum())
        cutflow["events passing"] = int(keep.sum())
    weights = None
    if derivation.weight is not None:
        weights = np.asarray(evaluate(derivation.weight, columns, n), dtype=np.float64)
        weights = weights if keep is None else weights[keep]
    return Derived(columns, keep, cutflow, weights)

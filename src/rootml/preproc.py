"""MLaaS4HEP's ``preproc.json`` read as it is, and turned into rootml's selections.

MLaaS4HEP (branch ``uproot4``, ``doc/preproc.md``) takes three sections:

- ``new_branch``: ``{name: {"def": expr, "type": "flat"|"jagged", "cut" | "cut_<i>": ...,
  "remove": "True"|"False", "keys_to_remove": [branches]}}``;
- ``flat_cut``: ``{branch: {"cut" | "cut_<i>": "0<=nLeptons<=2", "remove": ...}}``;
- ``jagged_cut``: ``{branch: {"cut" | "cut_<i>": ["partonPt>200", "any"|"all"], "remove": ...}}``.

A flat cut keeps the events where it holds; a jagged cut ``[expr, "any"]`` keeps those where
it holds for at least one object (``all``: for every object); all cuts together make one
event selection. ``def`` becomes a new variable (the same arithmetic and NumPy functions, in
rootml's expression language: docs/expressions.md), ``remove`` and ``keys_to_remove`` keep a
branch out of the features (it is still read where an expression needs it). Every key is
honoured or refused by name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .exceptions import ConfigError, closest

SECTIONS = ("new_branch", "flat_cut", "jagged_cut")
_CUT = re.compile(r"cut(_\d+)?")


def load_preproc(path: str | Path) -> tuple[dict, tuple[str, ...]]:
    """Read ``preproc.json``: (the derivation document for input.yml's keys, the branches to
    keep out of the features)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no such preproc file\nin file {path}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(
            f"preproc.json is not JSON ({err}); MLaaS4HEP's preproc.json is a JSON object "
            f"with new_branch, flat_cut and jagged_cut\nin file {path}"
        ) from None
    try:
        return translate(doc)
    except ConfigError as err:
        raise ConfigError(f"{err}\nin file {path}") from None


def translate(doc: Any) -> tuple[dict, tuple[str, ...]]:
    """``preproc.json``'s document -> (``{"selection", "new_variables"}``, excluded names)."""
    _keys(doc, SECTIONS, "preproc.json")
    cuts: list[str] = []
    variables: dict[str, str] = {}
    exclude: list[str] = []
    for name, entry in _section(doc, "new_branch").items():
        where = f"new_branch.{name}"
        _keys(entry, ("def", "type", "remove", "keys_to_remove"), where, cuts=True)
        if not isinstance(entry.get("def"), str) or not entry["def"].strip():
            raise ConfigError(f"{where} needs 'def', the expression of the new branch")
        kind = entry.get("type", "flat")
        if kind not in ("flat", "jagged"):
            raise ConfigError(f"{where}.type must be 'flat' or 'jagged', got {kind!r}")
        variables[name] = entry["def"]
        cuts += _cuts(entry, kind, where)
        if _flag(entry, "remove", where):
            exclude.append(name)
        removed = entry.get("keys_to_remove", [])
        if not isinstance(removed, list) or not all(isinstance(k, str) for k in removed):
            raise ConfigError(f"{where}.keys_to_remove must be a list of branch names")
        exclude += removed
    for section, kind in (("flat_cut", "flat"), ("jagged_cut", "jagged")):
        for branch, entry in _section(doc, section).items():
            where = f"{section}.{branch}"
            _keys(entry, ("remove",), where, cuts=True)
            found = _cuts(entry, kind, where)
            if not found:
                raise ConfigError(f"{where} has no 'cut'; give one, or remove the entry")
            cuts += found
            if _flag(entry, "remove", where):
                exclude.append(branch)
    derived: dict[str, Any] = {}
    if cuts:
        derived["selection"] = " & ".join(f"({c})" for c in cuts) if len(cuts) > 1 else cuts[0]
    if variables:
        derived["new_variables"] = variables
    return derived, tuple(dict.fromkeys(exclude))


def _section(doc: Mapping, name: str) -> Mapping:
    section = doc.get(name, {})
    if not isinstance(section, Mapping) or not all(
        isinstance(v, Mapping) for v in section.values()
    ):
        raise ConfigError(f"preproc.json's {name} must map names to objects")
    return section


def _keys(entry: Any, allowed: tuple[str, ...], where: str, *, cuts: bool = False) -> None:
    """Refuse keys MLaaS4HEP does not have (a typo would otherwise drop a cut silently)."""
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where} must be a JSON object, got {type(entry).__name__}")
    for key in entry:
        if key in allowed or (cuts and _CUT.fullmatch(key)):
            continue
        known = [*allowed, *(["cut", "cut_1", "cut_2"] if cuts else [])]
        hint = ", ".join(repr(k) for k in closest(key, known, 3))
        raise ConfigError(f"unknown key {key!r} in {where} (closest: {hint}); rootml reads {known}")


def _cuts(entry: Mapping, kind: str, where: str) -> list[str]:
    """The entry's cuts in order (``cut``, then ``cut_1``, ``cut_2``, ...) as event conditions."""
    keys = sorted((k for k in entry if _CUT.fullmatch(k)), key=lambda k: int(k[4:] or 0))
    out = []
    for key in keys:
        value = entry[key]
        if kind == "flat":
            if not isinstance(value, str):
                raise ConfigError(
                    f"{where}.{key} must be a string such as '0<=nLeptons<=2' (a flat cut), "
                    f"got {value!r}"
                )
            out.append(value)
            continue
        if (
            not isinstance(value, list)
            or len(value) != 2
            or not isinstance(value[0], str)
            or value[1] not in ("any", "all")
        ):
            raise ConfigError(
                f"{where}.{key} must be [cut, 'any' | 'all'] for a jagged branch, such as "
                f"['partonPt>200', 'all'], got {value!r}"
            )
        out.append(f"{value[1]}({value[0]})")
    return out


def _flag(entry: Mapping, key: str, where: str) -> bool:
    """MLaaS4HEP writes booleans as the strings "True"/"False"; JSON booleans work too."""
    value = entry.get(key, False)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError(f'{where}.{key} must be "True" or "False", got {value!r}')

"""The settings flags shared by the data and model subcommands."""

from __future__ import annotations

import argparse


def add_settings_flags(p: argparse.ArgumentParser, *, layout: bool) -> None:
    g = p.add_argument_group("settings (override --params / --input)")
    g.add_argument("--input", metavar="INPUT_YML", help="rootml input.yml")
    g.add_argument("--params", metavar="PARAMS_JSON", help="MLaaS4HEP params.json")
    g.add_argument("--tree", help="TTree or RNTuple name (params.json 'branch')")
    g.add_argument("--branches", help="comma list of branches to use (selected_branches)")
    g.add_argument("--exclude", help="comma list of branches to skip (exclude_branches)")
    g.add_argument("--identifiers", help="comma list of identifier branches, never features")
    g.add_argument("--redirector", help="XRootD prefix for LFNs (/store/...)")
    if not layout:
        return
    g.add_argument("--scaling", choices=["minmax", "standard"])
    g.add_argument(
        "--jagged-cap", help="auto (default), max, a quantile such as p99 or p99.9, or an integer"
    )
    g.add_argument(
        "--counts", action="store_true", default=None, help="add a count feature per collection"
    )
    g.add_argument(
        "--masks", action="store_true", default=None, help="add mask features per collection"
    )
    g.add_argument("--nan-policy", choices=["error", "drop", "replace"])
    g.add_argument(
        "--empty-branches",
        choices=["drop", "error"],
        help="branches with no finite value in any file (default: drop, with one warning)",
    )
    g.add_argument("--pad-value", type=float)
    g.add_argument("--nevts", type=int, help="events to use over all files (-1: all)")
    g.add_argument("--chunk-size", type=int, help="events per shard (-1: one per file)")
    g.add_argument("--val", type=float, dest="val_fraction", help="validation fraction")
    g.add_argument("--test", type=float, dest="test_fraction", help="test fraction")
    g.add_argument("--seed", type=int)


def _names(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    return tuple(t.strip() for t in text.split(",") if t.strip())


def settings_from(args: argparse.Namespace):
    """(Inputs or None, Settings) from --input/--params and the flags."""
    from ..config import Settings, load_input, load_params, with_overrides

    inputs = None
    if args.input:
        inputs, settings = load_input(args.input)
    else:
        settings = Settings(**(load_params(args.params) if args.params else {}))
    cap = getattr(args, "jagged_cap", None)
    if cap is not None and cap.isdigit():
        cap = int(cap)
    changes = {
        "tree": args.tree,
        "selected": _names(getattr(args, "branches", None)),
        "exclude": _names(getattr(args, "exclude", None)),
        "identifiers": _names(getattr(args, "identifiers", None)),
        "redirector": args.redirector,
    }
    for key in (
        "scaling",
        "counts",
        "masks",
        "nan_policy",
        "empty_branches",
        "pad_value",
        "nevts",
        "chunk_size",
        "val_fraction",
        "test_fraction",
        "seed",
    ):
        changes[key] = getattr(args, key, None)
    changes["jagged_cap"] = cap
    return inputs, with_overrides(settings, **changes)

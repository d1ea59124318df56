"""The options shared by the subcommands: the settings flags (one spelling each, declared
here once) and old spellings of renamed options, which keep working for one release."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from ..sources import FORMATS

#: the namespace attribute where old spellings used on the command line are listed, so that
#: the CLI warns about them once logging is set up
DEPRECATED = "deprecated_spellings"

#: how far a subcommand reads the settings: where the files are (fetch), which branches
#: (specs, preprocess), how the layout is made (merge), how to train (train)
SCOPES = ("source", "branches", "layout", "train")


class _OldSpelling(argparse.Action):
    """An option's spelling before 0.2: it sets the new option's value and is listed under
    :data:`DEPRECATED`."""

    def __init__(self, option_strings, dest, *, new: str, convert: Callable | None, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.new = new
        self.convert = convert

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: ARG002
        setattr(namespace, self.dest, self.convert(values) if self.convert else values)
        said = getattr(namespace, DEPRECATED, None) or []
        said.append(f"{option_string} is deprecated and goes in 0.3: use {self.new}")
        setattr(namespace, DEPRECATED, said)


def add_option(p, new: str, *, old: str | None = None, convert: Callable | None = None, **kw):
    """Add option ``new``; ``old``, its spelling before 0.2, still works (``convert`` maps an
    old value to a new one) and is hidden from ``--help``. A required option is required in
    either spelling."""
    required = kw.pop("required", False)
    if old is None:
        return p.add_argument(new, required=required, **kw)
    group = p.add_mutually_exclusive_group(required=required)
    action = group.add_argument(new, **kw)
    group.add_argument(
        old,
        dest=action.dest,
        type=kw.get("type"),
        action=_OldSpelling,
        new=new,
        convert=convert,
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )
    return action


def add_layout_option(
    p, help: str = "layout.json written by 'rootml merge'", required: bool = True
) -> None:
    """``--layout``, the merged layout a command works with (``--specs`` before 0.2)."""
    add_option(p, "--layout", old="--specs", required=required, metavar="LAYOUT_JSON", help=help)


def add_threads_option(p) -> None:
    """``--threads``: decompression threads of a data step (``--workers`` before 0.2)."""
    add_option(p, "--threads", old="--workers", type=int, default=1, help="decompression threads")


def add_settings_flags(p: argparse.ArgumentParser, *, scope: str) -> None:
    """The settings a subcommand reads (``scope``, one of :data:`SCOPES`); each overrides the
    same setting of ``--params`` / ``--input``."""
    if scope not in SCOPES:
        raise ValueError(f"scope {scope!r} is not one of {SCOPES}")
    g = p.add_argument_group("settings (override --params / --input)")
    g.add_argument("--input", metavar="INPUT_YML", help="rootml input.yml")
    g.add_argument("--params", metavar="PARAMS_JSON", help="MLaaS4HEP params.json")
    if scope == "train":
        g.add_argument("--epochs", type=int)
        g.add_argument("--batch-size", type=int)
        g.add_argument("--seed", type=int)
        return
    g.add_argument("--tree", help="TTree or RNTuple name (params.json 'branch')")
    g.add_argument(
        "--format",
        "--dtype",
        dest="file_format",
        choices=FORMATS,
        help="the input files' format when their names do not say it (MLaaS4HEP's --dtype)",
    )
    g.add_argument("--redirector", help="XRootD prefix for LFNs (/store/...)")
    if scope == "source":
        return
    g.add_argument(
        "--preproc",
        metavar="FILE",
        help="MLaaS4HEP's preproc.json (its cuts and new branches, docs/expressions.md), or "
        "a .py file defining preprocessing(rec) for record inputs (docs/records.md)",
    )
    g.add_argument("--branches", help="comma list of branches to use (selected_branches)")
    g.add_argument("--exclude", help="comma list of branches to skip (exclude_branches)")
    g.add_argument("--identifiers", help="comma list of identifier branches, never features")
    if scope == "branches":
        return
    g.add_argument("--scaling", choices=["quantile", "minmax", "standard"])
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
    g.add_argument(
        "--categorical",
        choices=["auto", "onehot", "index"],
        help="string fields of record files: one 0/1 column per value, the value's index, "
        "or auto (default): one-hot up to 16 values",
    )
    g.add_argument("--pad-value", type=float)
    g.add_argument("--nevts", type=int, help="events to use over all files (-1: all)")
    g.add_argument(
        "--chunk-size",
        type=_chunk_size,
        help="events per shard (-1: one per file; auto, the default: 10,000, more for narrow rows)",
    )
    add_option(g, "--val-fraction", old="--val", type=float, help="validation fraction")
    add_option(g, "--test-fraction", old="--test", type=float, help="test fraction")
    g.add_argument("--seed", type=int)


def _names(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    return tuple(t.strip() for t in text.split(",") if t.strip())


def settings_from(args: argparse.Namespace):
    """(Inputs or None, Settings) from --input/--params and the flags."""
    from ..config import Settings, load_input, load_params, with_overrides, with_preproc

    inputs = None
    if args.input:
        inputs, settings = load_input(args.input)
    else:
        settings = Settings(**(load_params(args.params) if args.params else {}))
    cap = getattr(args, "jagged_cap", None)
    if cap is not None and cap.isdigit():
        cap = int(cap)
    changes = {
        "tree": getattr(args, "tree", None),
        "file_format": getattr(args, "file_format", None),
        "selected": _names(getattr(args, "branches", None)),
        "exclude": _names(getattr(args, "exclude", None)),
        "identifiers": _names(getattr(args, "identifiers", None)),
        "redirector": getattr(args, "redirector", None),
    }
    for key in (
        "scaling",
        "counts",
        "masks",
        "nan_policy",
        "empty_branches",
        "categorical",
        "pad_value",
        "nevts",
        "chunk_size",
        "val_fraction",
        "test_fraction",
        "seed",
        "epochs",
        "batch_size",
    ):
        changes[key] = getattr(args, key, None)
    changes["jagged_cap"] = cap
    settings = with_overrides(settings, **changes)
    if getattr(args, "preproc", None):
        settings = with_preproc(settings, args.preproc)
    return inputs, settings


def _chunk_size(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of events or auto") from None

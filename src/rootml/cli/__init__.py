"""The ``rootml`` command line: parse options, load settings once, call one library function.

Heavy modules (uproot, h5py, TensorFlow) are imported inside the subcommands, so
``rootml --help`` is instant. A :class:`~rootml.exceptions.RootmlError` becomes one readable
message on stderr and exit status 1; nothing else is caught.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .. import __version__
from ..exceptions import RootmlError
from . import data, model, serving, workflow
from .settings import DEPRECATED

log = logging.getLogger("rootml")

#: set by the workflow's steps: where the step records the Python environment it ran in
STEP_ENV = "ROOTML_STEP_ENV"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rootml",
        description="ROOT files to a trained, evaluated and served Keras model.",
    )
    parser.add_argument("--version", action="version", version=f"rootml {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (data, model, serving, workflow):
        module.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose > 1 else logging.INFO)
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.captureWarnings(True)  # Python warnings in the log format rootml run forwards
    for message in getattr(args, DEPRECATED, None) or ():
        log.warning(message)
    if args.verbose < 2:  # TensorFlow's C++ start-up lines drown the one INFO line per stage
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.environ.get(STEP_ENV):  # inside a workflow step: record this environment once
        from ..workflow.provenance import record_environment

        record_environment(Path(os.environ[STEP_ENV]))
    try:
        return args.func(args)
    except RootmlError as err:
        print(f"rootml {args.command}: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        message = os_error_message(
            err, getattr(args, "out", None) or getattr(args, "workdir", None)
        )
        if message is None:
            raise
        print(f"rootml {args.command}: error: {message}", file=sys.stderr)
        return 1


#: what to do about the operating-system errors a user can fix
_OS_FIXES = {
    errno.ENOSPC: "no space left on the device: free space there (df -h) or write elsewhere",
    errno.EDQUOT: "disk quota exceeded: free space in your quota or write elsewhere",
    errno.EACCES: "permission denied: fix the permissions or write elsewhere",
    errno.EPERM: "operation not permitted: fix the permissions or write elsewhere",
    errno.EROFS: "read-only file system: write elsewhere",
}


def os_error_message(err: OSError, out: object = None) -> str | None:
    """One line for an OSError a user can act on (disk full, permissions, a read-only folder),
    naming the path (or the output being written when the system names none); None for
    others. Outputs are written under temporary names and renamed when complete, so nothing
    partial is left under an output's name."""
    fix = _OS_FIXES.get(err.errno)
    if fix is None:
        return None
    where = err.filename or (f"an output under {out}" if out else "an output")
    return f"{where}: {fix}; then run the command again (nothing partial was kept)"

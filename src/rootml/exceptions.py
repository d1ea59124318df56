"""The errors rootml raises.

Every error a user can cause derives from :class:`RootmlError`. Library code raises them;
only the CLI turns one into a single readable message and a non-zero exit, and only the
server turns one into a JSON error with a 4xx status.

Messages follow one pattern: what was expected, the bad value, where (file, tree, branch or
config key, with "in file ..." on its own line), and the fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class RootmlError(Exception):
    """Base class of every error rootml raises on purpose."""


class ConfigError(RootmlError):
    """Raised when ``params.json``, ``files.txt``, ``labels.txt`` or ``input.yml`` holds an
    unknown key, a value of the wrong type, or settings that contradict each other."""


class SchemaValidationError(ConfigError):
    """Raised when a JSON document (specs, layout, input.yml) does not match its schema."""


class InputFileError(RootmlError):
    """Raised when an input file cannot be opened or read: not a ROOT file, truncated,
    missing, an unreachable URL, or a checksum that does not match."""


class TreeNotFoundError(InputFileError):
    """Raised when the requested TTree or RNTuple is not in a file."""


class BranchError(RootmlError):
    """Raised when a selected branch is missing, has an unsupported type, or has a type that
    differs between files."""


class DataError(RootmlError):
    """Raised when values in the data break a declared policy: NaN/inf under
    ``nan_policy: error``, an empty tree, a label branch with non-integer values."""


class LayoutError(RootmlError):
    """Raised when shards, specs and a layout do not belong together (digest mismatch) or a
    chunk index is outside the plan."""


class ForeignShardError(LayoutError):
    """A shard written for another layout (its specs digest or row width differs)."""


class ModelError(RootmlError):
    """Raised when the user's ``model.py`` cannot be loaded, does not define ``model(idim)``,
    returns something that is not a compiled Keras model, or does not fit the labels and
    the feature layout (input size, output units, loss)."""


class BundleError(RootmlError):
    """Raised when a model bundle is incomplete, was built from other specs than the shards
    it is used with, or its exported model disagrees with the trained one."""


class RequestError(RootmlError):
    """Raised by ``rootml serve`` for a client's mistake: a body that is not JSON, an unknown
    model, a wrong feature count, an upload that is too large or a hostile tarball, a missing
    token. ``status`` is the HTTP status the server answers with (4xx)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ServerError(RootmlError):
    """Raised when an embedded server (``rootml serve`` in a child process, for ``rootml
    run`` and the tests) exits or does not answer in time."""


class PublishError(RootmlError):
    """Raised by the client side (``rootml publish``, ``models``, ``delete``, ``predict --url``)
    when a server cannot be reached, answers with an error, or serves predictions that differ
    from the bundle's reference outputs."""


class WorkflowError(RootmlError):
    """``rootml run``/``replay``: no engine can run the workflow, or a step of it failed."""


class ExpressionError(ConfigError):
    """Raised when a selection, weight or new variable written in ``input.yml`` does not parse,
    uses a construct, name or function the expression language does not have, or combines
    values of the wrong kind (per event with per object, numbers with conditions).

    The place is kept as data: ``where`` (the config key, such as ``new_variables.ht``),
    ``source`` (the expression), ``column`` (1-based, or None) and ``fix``. The message shows
    the expression with a caret under the column, then the fix."""

    def __init__(
        self,
        problem: str,
        where: str,
        fix: str,
        source: str | None = None,
        column: int | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(problem, where, fix, source, column, detail)
        self.problem, self.where, self.fix = problem, where, fix
        self.source, self.column, self.detail = source, column, detail

    def __str__(self) -> str:
        head = f"{self.problem} in {self.where}"
        if self.column is not None:
            head += f" at column {self.column}"
        if self.detail:
            head += f": {self.detail}"
        lines = [head]
        if self.source is not None:
            lines.append(f"  {self.source}")
            if self.column is not None:
                lines.append("  " + " " * (self.column - 1) + "^")
        lines.append(self.fix)
        return "\n".join(lines)


def closest(name: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """Return up to ``n`` candidates, the ones most similar to ``name`` first.

    Used to list "did you mean" branch names and config keys, as uproot's KeyInFileError does.
    """
    candidates = list(candidates)
    best = difflib.get_close_matches(name, candidates, n=n, cutoff=0.0)
    lowered = name.lower()
    # a case-insensitive substring match is a stronger hint than edit distance
    substr = [c for c in candidates if lowered in c.lower() or c.lower() in lowered]
    ordered = [*substr, *best]
    return list(dict.fromkeys(ordered))[:n]


def format_closest(name: str, candidates: Iterable[str], n: int = 5) -> str:
    """A "closest: a, b, c" phrase for error messages (empty when there are no candidates)."""
    hits = closest(name, candidates, n)
    return f"closest: {', '.join(repr(h) for h in hits)}" if hits else "the file has no branches"

"""Where an input file lives: local path, ``file://``, ``http(s)://``, ``root://`` or an LFN.

This module only interprets names; it opens nothing. MLaaS4HEP silently turned any path that
did not exist locally into a remote XRootD open, so a typo became a network error minutes
later. Here only logical file names (``/store/...``) go through the redirector, and a local
path that does not exist is an error at once.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from .exceptions import ConfigError, InputFileError

REMOTE_SCHEMES = ("http", "https", "root")
#: record files (rootml.records) by the ending of their name; JSON and CSV may be compressed
RECORD_FORMATS = {
    "json": (".json", ".jsonl", ".ndjson"),
    "csv": (".csv",),
    "parquet": (".parquet", ".pq"),
    "avro": (".avro",),
}
COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2"}


#: what ``format`` (input.yml; ``--format``, ``--dtype`` as MLaaS4HEP spells it) may say
FORMATS = ("root", *RECORD_FORMATS)


def record_format(name: str, given: str | None = None) -> str | None:
    """The record format of a file: ``given`` when set (``root`` gives None), else what its
    name says (``events.json.gz``: json), else None (ROOT)."""
    if given:
        return None if given == "root" else given
    stem = name.lower()
    for suffix in COMPRESSIONS:
        stem = stem.removesuffix(suffix)
    return next((f for f, ends in RECORD_FORMATS.items() if stem.endswith(ends)), None)


def given_format(specs_format: str) -> str:
    """The ``format`` to open a file with again, from what its specs recorded (``TTree`` or
    ``RNTuple``: ``root``; a record format: itself)."""
    return specs_format if specs_format in RECORD_FORMATS else "root"


LFN_PREFIX = "/store/"


@dataclass(frozen=True)
class Source:
    """One input file: ``original`` as the user wrote it, ``url`` as uproot opens it."""

    original: str
    url: str
    scheme: str  # "file", "http", "https" or "root"

    @property
    def remote(self) -> bool:
        return self.scheme in REMOTE_SCHEMES

    @property
    def basename(self) -> str:
        path = urlparse(self.url).path if self.remote else self.url
        return posixpath.basename(path.rstrip("/"))


def resolve(
    name: str,
    *,
    redirector: str | None = None,
    search_dirs: Iterable[str | Path] = (),
) -> Source:
    """Interpret one entry of ``files.txt`` (or a command-line argument).

    Relative local paths are looked up in the current directory first, then in each of
    ``search_dirs`` (the folder of ``files.txt``). An LFN that is not a local file is
    prefixed with ``redirector``.
    """
    name = name.strip()
    if not name:
        raise ConfigError("an input file name is empty; remove the blank entry")
    parsed = urlparse(name)
    scheme = parsed.scheme.lower()
    if scheme in REMOTE_SCHEMES:
        if not parsed.netloc:
            raise ConfigError(f"the URL {name!r} has no host; write it as {scheme}://HOST/PATH")
        return Source(name, name, scheme)
    if scheme == "file":
        return _local(name, unquote(parsed.path), search_dirs=())
    if scheme and len(scheme) > 1:  # "c:" would be a Windows drive, not a scheme
        raise ConfigError(
            f"unsupported URL scheme {scheme!r} in {name!r}; "
            "use a local path, file://, http(s):// or root://"
        )
    if name.startswith(LFN_PREFIX) and not Path(name).exists():
        if not redirector:
            raise InputFileError(
                f"{name!r} looks like a logical file name (LFN) but no redirector is set;\n"
                "set 'redirector' in params.json (e.g. root://cms-xrd-global.cern.ch) "
                "or give a local path"
            )
        url = redirector.rstrip("/") + "/" + name
        return Source(name, url, urlparse(url).scheme.lower() or "root")
    return _local(name, name, search_dirs=search_dirs)


def _local(original: str, path: str, *, search_dirs: Iterable[str | Path]) -> Source:
    candidates = [Path(path)]
    if not Path(path).is_absolute():
        candidates += [Path(d) / path for d in search_dirs]
    for candidate in candidates:
        if candidate.is_file():
            return Source(original, str(candidate.resolve()), "file")
    where = ", ".join(str(c.parent.resolve()) for c in candidates)
    raise InputFileError(
        f"input file {original!r} does not exist (looked in {where});\n"
        "check the path in files.txt; remote files need a URL (root://, https://) "
        "and LFNs start with /store/"
    )

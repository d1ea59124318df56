"""The fetch stage: make one input file available locally, verified, with its checksum.

A remote file (``http(s)://``, ``root://``, or an LFN through the redirector) is downloaded
into the output folder; a local file (a path or ``file://``) is only verified and hashed, never
copied. Either way the stage writes ``fetch.json`` (a :class:`FetchRecord`) beside it.

Downloads stream in blocks into a temporary file in the output folder, hashing as they go,
and are renamed into place only once complete and checked (size against ``Content-Length`` or
the XRootD stat size, and the expected SHA-256 when given). Connection errors, timeouts,
5xx answers and short bodies are retried with exponential backoff; a 404 is not. A failed
fetch leaves nothing behind: no temporary file, no download, no ``fetch.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.client
import json
import logging
import math
import os
import re
import secrets
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from . import __version__
from .exceptions import ConfigError, InputFileError, RootmlError
from .reading import open_input
from .sources import Source, resolve

log = logging.getLogger(__name__)

RECORD_NAME = "fetch.json"
BLOCK_SIZE = 1 << 20  # 1 MiB per read
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class FetchRecord:
    """What ``fetch`` produced, as written to ``fetch.json``.

    ``source`` is the name as the user gave it, ``url`` what it resolved to, ``path`` the
    absolute local path the next stages read, ``copied`` whether ``path`` is a download.
    """

    source: str
    url: str
    path: str
    size: int
    sha256: str
    copied: bool

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FetchRecord:
        fields = [f.name for f in dataclasses.fields(cls)]
        missing = [name for name in fields if name not in data]
        if missing:
            raise ConfigError(f"a fetch record lacks {missing}; run 'rootml fetch' again")
        return cls(**{name: data[name] for name in fields})

    @classmethod
    def load(cls, path: str | Path) -> FetchRecord:
        """Read a ``fetch.json`` written by :func:`fetch`."""
        return cls.from_dict(json.loads(Path(path).read_text()))


class _Transient(Exception):
    """One download attempt failed in a way another attempt may not (5xx, short body)."""


class _Permanent(Exception):
    """The server answered that retrying cannot help (404, 403, not found on XRootD)."""


def fetch(
    src: str,
    out_dir: str | Path,
    *,
    tree: str | None = None,
    redirector: str | None = None,
    sha256: str | None = None,
    retries: int = 3,
    backoff: float = 1.0,
    timeout: float = 30.0,
    progress: bool | None = None,
    file_format: str | None = None,
) -> FetchRecord:
    """Make ``src`` available as a local file and record it in ``out_dir/fetch.json``.

    Remote files are downloaded to ``out_dir/<basename>`` (attempted ``1 + retries`` times,
    sleeping ``backoff * 2**k`` seconds between attempts); local files are verified in place.
    With ``tree``, the file must open and hold that TTree or RNTuple. With ``sha256``, its
    checksum must match. ``progress`` shows a bar on stderr (default: when it is a terminal).
    ``file_format`` says the file's format when its name does not (``json``, ``root``, ...).
    """
    expected = _check_options(sha256, retries, backoff, timeout)
    source = resolve(src, redirector=redirector)
    out = Path(out_dir)
    if source.remote:
        record = _fetch_remote(
            source,
            out,
            tree=tree,
            expected=expected,
            retries=retries,
            backoff=backoff,
            timeout=timeout,
            progress=progress,
            file_format=file_format,
        )
    else:
        record = _verify_local(
            source, tree=tree, expected=expected, timeout=timeout, file_format=file_format
        )
        out.mkdir(parents=True, exist_ok=True)
        _write_atomic(out / RECORD_NAME, record.to_json().encode())
    return record


def _check_options(sha256: str | None, retries: int, backoff: float, timeout: float) -> str | None:
    if retries < 0:
        raise ConfigError(f"retries must be 0 or more, not {retries}")
    if backoff < 0 or timeout <= 0:
        raise ConfigError(
            f"backoff must be >= 0 and timeout > 0 seconds, not {backoff} and {timeout}"
        )
    if sha256 is None:
        return None
    expected = sha256.strip().lower()
    if not _SHA256.match(expected):
        raise ConfigError(
            f"the expected sha256 {sha256!r} is not 64 hexadecimal digits; "
            "give the output of 'sha256sum FILE'"
        )
    return expected


def _verify_local(
    source: Source,
    *,
    tree: str | None,
    expected: str | None,
    timeout: float,
    file_format: str | None = None,
) -> FetchRecord:
    path = Path(source.url)
    if tree is not None:
        with open_input(source, tree, timeout=timeout, file_format=file_format):
            pass
    size, digest = 0, hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(BLOCK_SIZE), b""):
            size += len(block)
            digest.update(block)
    got = digest.hexdigest()
    if expected is not None and got != expected:
        raise InputFileError(
            f"sha256 mismatch: expected {expected}, got {got};\n"
            f"the file is not the one listed: check the file or the checksum\nin file {path}"
        )
    log.info("verified %s: %d bytes, sha256 %s (not copied)", path, size, got)
    return FetchRecord(source.original, source.url, str(path), size, got, copied=False)


def _fetch_remote(
    source: Source,
    out: Path,
    *,
    tree: str | None,
    expected: str | None,
    retries: int,
    backoff: float,
    timeout: float,
    progress: bool | None,
    file_format: str | None = None,
) -> FetchRecord:
    name = source.basename
    if not name or name in (".", "..", RECORD_NAME):
        raise InputFileError(
            f"the URL does not end in a usable file name ({name!r});\n"
            f"give the URL of the file itself\nin file {source.url}"
        )
    out.mkdir(parents=True, exist_ok=True)
    dest = out / name
    show = sys.stderr.isatty() if progress is None else progress
    attempts = retries + 1
    last: Exception | None = None
    for attempt in range(1, attempts + 1):
        started = time.monotonic()
        try:
            size, digest = _download_once(
                source, dest, expected=expected, timeout=timeout, progress=show
            )
            break
        except _Permanent as err:
            raise InputFileError(
                f"cannot download: {err};\ncheck the URL (and the redirector for an LFN)"
                f"\nin file {source.url}"
            ) from err
        except (_Transient, OSError, http.client.HTTPException) as err:
            last = err
            if attempt < attempts:
                delay = backoff * 2 ** (attempt - 1)
                log.warning(
                    "attempt %d/%d to download %s failed (%s); retrying in %.2f s",
                    attempt,
                    attempts,
                    source.url,
                    _describe(err),
                    delay,
                )
                time.sleep(delay)
    else:
        raise InputFileError(
            f"cannot download {source.url} after {attempts} attempts: {_describe(last)};\n"
            "check that the server is up and reachable from here (try the URL with curl or "
            "xrdcp), or allow more attempts with --retries"
        ) from last
    elapsed = max(time.monotonic() - started, 1e-9)
    try:
        if tree is not None:
            local = Source(source.original, str(dest.resolve()), "file")
            with open_input(local, tree, file_format=file_format):
                pass
        record = FetchRecord(
            source.original, source.url, str(dest.resolve()), size, digest, copied=True
        )
        _write_atomic(out / RECORD_NAME, record.to_json().encode())
    except BaseException:
        dest.unlink(missing_ok=True)  # nothing that looks like a result
        raise
    log.info(
        "fetched %s: %d bytes in %.2f s (%.1f MB/s) -> %s",
        source.url,
        size,
        elapsed,
        size / elapsed / 1e6,
        dest,
    )
    return record


def _download_once(
    source: Source, dest: Path, *, expected: str | None, timeout: float, progress: bool
) -> tuple[int, str]:
    """One attempt: stream ``source`` into a temporary file, check its size and checksum,
    rename it to ``dest``. Returns ``(size, sha256)``; on any failure the temporary file is
    gone and ``dest`` untouched."""
    opener = _open_http if source.scheme in ("http", "https") else _open_xrootd
    tmp = _temp_path(dest)
    digest, got = hashlib.sha256(), 0
    try:
        with opener(source.url, timeout) as (size, read), _create(tmp) as fh:
            with tqdm(
                total=size,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=dest.name,
                file=sys.stderr,
                disable=not progress,
                leave=False,
            ) as bar:
                while size is None or got < size:
                    block = read(BLOCK_SIZE if size is None else min(BLOCK_SIZE, size - got))
                    if not block:
                        break
                    _write(fh, block, tmp)
                    digest.update(block)
                    got += len(block)
                    bar.update(len(block))
            if size is not None and got != size:
                raise _Transient(f"size mismatch: expected {size} bytes, got {got}")
            if expected is not None and digest.hexdigest() != expected:
                raise InputFileError(  # the same bytes would come again: not retried
                    f"sha256 mismatch: expected {expected}, got {digest.hexdigest()};\n"
                    "the file at the URL is not the one listed: check the URL or the checksum"
                    f"\nin file {source.url}"
                )
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return got, digest.hexdigest()


@contextlib.contextmanager
def _open_http(url: str, timeout: float) -> Iterator[tuple[int | None, Callable]]:
    request = urllib.request.Request(
        url, headers={"User-Agent": f"rootml/{__version__}", "Accept-Encoding": "identity"}
    )
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        err.close()
        what = f"HTTP {err.code} {err.reason}"
        if err.code >= 500 or err.code in (408, 429):
            raise _Transient(what) from err
        raise _Permanent(what) from err
    with response:
        length = response.headers.get("Content-Length")
        yield (int(length) if length and length.isdigit() else None), response.read


@contextlib.contextmanager
def _open_xrootd(url: str, timeout: float) -> Iterator[tuple[int | None, Callable]]:
    try:
        import fsspec

        # the XRootD client takes whole seconds only
        fs, path = fsspec.core.url_to_fs(url, timeout=max(1, math.ceil(timeout)))
    except (ImportError, ValueError) as err:
        raise _Permanent(
            f"root:// needs the XRootD client ({err}): pip install 'rootml[xrootd]'"
        ) from err
    try:
        size = int(fs.info(path)["size"])
    except OSError as err:
        # XRootD status 3011 is kXR_NotFound, 3010 kXR_NotAuthorized: retrying cannot help
        if isinstance(err, FileNotFoundError) or re.search(r"\[30(10|11)\]", str(err)):
            raise _Permanent(_describe(err)) from err
        raise
    with fs.open(path, "rb", block_size=BLOCK_SIZE) as fh:
        yield size, fh.read


def _temp_path(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.{os.getpid()}.{secrets.token_hex(4)}.part")


def _create(path: Path):
    """Open a new file for writing with the usual permissions (0666 less the umask)."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb")


def _write(fh, data: bytes, path: Path) -> None:
    try:
        fh.write(data)
    except OSError as err:  # the local disk, not the network: do not retry
        raise RootmlError(
            f"cannot write {path}: {err};\nfree some space or choose another output folder"
        ) from err


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    tmp = _temp_path(path)
    try:
        with _create(tmp) as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _describe(err: BaseException | None) -> str:
    if err is None:
        return "no attempt was made"
    if isinstance(err, urllib.error.URLError) and not isinstance(err, urllib.error.HTTPError):
        err = err.reason if isinstance(err.reason, BaseException) else err
    text = " ".join(str(err).split())
    return text or type(err).__name__

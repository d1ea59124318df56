"""Uploaded bundle tarballs, treated as hostile.

An upload is first spooled (memory, then the system temporary folder, never the model store)
while its size is counted, then read twice as a tar *stream*:

1. :func:`scan_tarball` reads every member header and skips every member's data through a
   reader that counts decompressed bytes, and rejects the upload if any member has an
   absolute name, a ``..`` part, a backslash, a control character, is not a regular file or
   a directory (symlinks, hardlinks, devices, FIFOs, sparse files), is too large, or lies
   outside the one top-level folder; or if there are too many members or the archive
   unpacks to more than the cap (a gzip bomb is stopped while it is being read, not after).
   Nothing is written anywhere during the scan.
2. :func:`extract_tarball` repeats the same checks member by member and writes regular files
   itself (``O_EXCL | O_NOFOLLOW``, mode 0644; folders 0755) below a fresh destination; the
   tar's own modes, owners and times are ignored.

Compression is gzip (by header or by its magic bytes) or none.
"""

from __future__ import annotations

import base64
import gzip
import io
import logging
import os
import re
import shutil
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

from ..client import is_model_name
from ..exceptions import RequestError

log = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
_OTHER_MAGIC = {
    b"BZh": "bzip2",
    b"\xfd7zXZ": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"PK\x03\x04": "zip",
}
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")
MAX_DEPTH = 16
MAX_PATH = 512
COPY_BLOCK = 1 << 20


@dataclass(frozen=True)
class ArchiveLimits:
    """What an uploaded tarball may hold."""

    max_members: int = 10_000
    max_member_bytes: int = 512 << 20
    max_unpacked_bytes: int = 1 << 30


@dataclass(frozen=True)
class ArchiveSummary:
    """What :func:`scan_tarball` found: the top-level folder, member count, unpacked bytes."""

    top: str
    members: int
    files: int
    unpacked_bytes: int


def check_model_name(name: object, what: str = "model name") -> str:
    """Return ``name`` if it matches ``[A-Za-z0-9_]{1,64}``, else a 400 naming it."""
    if not is_model_name(name):
        shown = repr(name)[:80]
        raise RequestError(
            400,
            f"{what} {shown} is not allowed: use 1 to 64 letters, digits or underscores "
            "([A-Za-z0-9_]{1,64})",
        )
    return name


class _CappedReader(io.RawIOBase):
    """A read-only stream that fails once more than ``cap`` bytes came out of ``inner``."""

    def __init__(self, inner: IO[bytes], cap: int) -> None:
        self.inner = inner
        self.cap = cap
        self.total = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = COPY_BLOCK
        try:
            data = self.inner.read(min(size, self.cap - self.total + 1))
        except (OSError, EOFError, zlib.error) as err:
            raise RequestError(400, f"the upload is not a readable gzip stream: {err}") from None
        self.total += len(data)
        if self.total > self.cap:
            raise RequestError(
                413,
                f"the tarball unpacks to more than {self.cap} bytes (a gzip bomb, or a bundle "
                "too large for this server); check what the tarball holds",
            )
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def is_archive(raw: BinaryIO) -> bool:
    """Whether ``raw`` starts as a tarball or a compressed stream (this module's magic bytes,
    or tar's ``ustar`` at offset 257), not as, say, a bare TensorFlow GraphDef."""
    raw.seek(0)
    head = raw.read(512)
    raw.seek(0)
    magics = (GZIP_MAGIC, *_OTHER_MAGIC)
    return any(head.startswith(m) for m in magics) or head[257:262] == b"ustar"


def _open_stream(raw: BinaryIO, limits: ArchiveLimits, gzipped: bool | None) -> _CappedReader:
    raw.seek(0)
    head = raw.read(6)
    raw.seek(0)
    if not head:
        raise RequestError(400, "the upload is empty; send a bundle tarball (tar czf m.tgz m)")
    for magic, kind in _OTHER_MAGIC.items():
        if head.startswith(magic):
            raise RequestError(
                415, f"the upload is {kind}-compressed; send a plain or gzip tarball"
            )
    if gzipped is None:
        gzipped = head.startswith(GZIP_MAGIC)
    elif gzipped and not head.startswith(GZIP_MAGIC):
        raise RequestError(400, "Content-Encoding says gzip but the body is not gzip data")
    inner: IO[bytes] = gzip.GzipFile(fileobj=raw, mode="rb") if gzipped else raw
    return _CappedReader(inner, limits.max_unpacked_bytes)


def _members(stream: _CappedReader) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
    try:
        archive = tarfile.open(fileobj=stream, mode="r|")  # noqa: SIM115  # closed below
    except (tarfile.TarError, EOFError) as err:
        raise RequestError(400, f"the upload is not a tar archive: {err}") from None
    with archive:
        while True:
            try:
                member = archive.next()
            except (tarfile.TarError, EOFError, UnicodeError) as err:
                raise RequestError(400, f"the tarball is corrupt: {err}") from None
            if member is None:
                return
            yield archive, member


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return "a symbolic link"
    if member.islnk():
        return "a hard link"
    if member.ischr() or member.isblk():
        return "a device"
    if member.isfifo():
        return "a FIFO"
    if member.issparse():
        return "a sparse file"
    if member.isdir():
        return "dir"
    if member.isreg():
        return "file"
    return f"of tar type {member.type!r}"


def _parts(member: tarfile.TarInfo) -> list[str]:
    """The member's path parts below the archive root, or a 400 naming the bad member."""
    name = member.name
    shown = repr(name)[:120]
    try:
        name.encode("utf-8")
    except UnicodeError:
        raise RequestError(400, f"tar member {shown} is not named in UTF-8") from None
    if _BAD_CHARS.search(name):
        raise RequestError(400, f"tar member {shown} has a backslash or control character")
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        raise RequestError(400, f"tar member {shown} has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise RequestError(400, f"tar member {shown} climbs out of its folder with '..'")
    if len(parts) > MAX_DEPTH or len(name) > MAX_PATH:
        raise RequestError(400, f"tar member {shown} is nested too deep or named too long")
    return parts


class _Checker:
    """Member-by-member checks shared by the scan and the extraction."""

    def __init__(self, limits: ArchiveLimits, rename: str | None) -> None:
        self.limits = limits
        self.rename = rename
        self.top: str | None = None
        self.files: set[tuple[str, ...]] = set()
        self.dirs: set[tuple[str, ...]] = set()
        self.count = 0
        self.declared = 0

    def check(self, member: tarfile.TarInfo) -> tuple[str, ...] | None:
        """The member's path below the top-level folder (``()`` for the folder itself), or
        ``None`` for the archive root entry ``.``."""
        self.count += 1
        if self.count > self.limits.max_members:
            raise RequestError(413, f"the tarball has more than {self.limits.max_members} members")
        parts = _parts(member)
        kind = _kind(member)
        shown = repr(member.name)[:120]
        if kind not in ("file", "dir"):
            raise RequestError(
                400,
                f"tar member {shown} is {kind}; a bundle holds only regular files and folders",
            )
        if not parts:
            if kind == "dir":
                return None
            raise RequestError(400, f"tar member {shown} has an empty name")
        top, rel = parts[0], tuple(parts[1:])
        if not rel and kind == "file":
            raise RequestError(
                400,
                f"the tarball's top-level entry {top!r} is a file; pack one folder named after "
                "the model: tar czf m.tar.gz MODEL_NAME",
            )
        if self.top is None:
            self.top = top
            if self.rename is None:
                check_model_name(top, "the tarball's top-level folder (the model name)")
        elif top != self.top:
            raise RequestError(
                400,
                f"the tarball has more than one top-level entry ({self.top!r} and {top!r}); "
                "pack one folder named after the model: tar czf m.tar.gz MODEL_NAME",
            )
        if kind == "file":
            if member.size > self.limits.max_member_bytes:
                raise RequestError(
                    413,
                    f"tar member {shown} is {member.size} bytes, over the "
                    f"{self.limits.max_member_bytes}-byte limit per file",
                )
            self.declared += member.size
            if self.declared > self.limits.max_unpacked_bytes:
                raise RequestError(
                    413,
                    f"the tarball unpacks to more than {self.limits.max_unpacked_bytes} bytes",
                )
        clash = (
            rel in self.files
            or (kind == "file" and rel in self.dirs)
            or any(rel[:i] in self.files for i in range(1, len(rel)))
        )
        if clash:
            raise RequestError(400, f"tar member {shown} is listed twice or inside a file")
        (self.files if kind == "file" else self.dirs).add(rel)
        for i in range(1, len(rel)):
            self.dirs.add(rel[:i])
        return rel

    def name(self) -> str:
        if self.top is None:
            raise RequestError(400, "the tarball holds no model folder")
        return self.rename or self.top


def scan_tarball(
    raw: BinaryIO,
    limits: ArchiveLimits,
    *,
    gzipped: bool | None = None,
    rename: str | None = None,
) -> ArchiveSummary:
    """Check every member of the tarball in ``raw`` without writing anything."""
    stream = _open_stream(raw, limits, gzipped)
    checker = _Checker(limits, rename)
    for _, member in _members(stream):
        checker.check(member)
    return ArchiveSummary(checker.name(), checker.count, len(checker.files), stream.total)


def extract_tarball(
    raw: BinaryIO,
    dest: Path,
    limits: ArchiveLimits,
    *,
    gzipped: bool | None = None,
    rename: str | None = None,
) -> Path:
    """Write the top-level folder's contents into ``dest`` (created here, must not exist)
    and return it. Call :func:`scan_tarball` first; the checks run again regardless."""
    stream = _open_stream(raw, limits, gzipped)
    checker = _Checker(limits, rename)
    dest.mkdir(mode=0o755)
    for archive, member in _members(stream):
        rel = checker.check(member)
        if not rel:
            continue
        target = dest.joinpath(*rel)
        if member.isdir():
            target.mkdir(mode=0o755, parents=True, exist_ok=True)
            continue
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        source = archive.extractfile(member)
        if source is None:  # pragma: no cover - isreg() members always have data
            raise RequestError(400, f"tar member {member.name!r} has no data")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(target, flags, 0o644)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(source, out, COPY_BLOCK)
    checker.name()
    return dest


def decode_base64(source: BinaryIO, out: BinaryIO, limit: int) -> None:
    """Decode base64 text from ``source`` into ``out`` block by block (the TFaaS Python
    client base64-encodes the ``model`` part and says so with ``Content-Encoding: base64``)."""
    carry = b""
    written = 0
    while block := source.read(COPY_BLOCK):
        data = carry + b"".join(block.split())
        cut = len(data) - len(data) % 4
        carry = data[cut:]
        try:
            decoded = base64.b64decode(data[:cut], validate=True)
        except ValueError:
            raise RequestError(400, "the model part is not valid base64") from None
        written += len(decoded)
        if written > limit:
            raise RequestError(413, f"the decoded upload is larger than {limit} bytes")
        out.write(decoded)
    if carry:
        raise RequestError(400, "the model part is not valid base64 (truncated)")
    out.seek(0)

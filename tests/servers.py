"""Real loopback servers for the tests: an HTTP file server with byte ranges, and XRootD.

Both listen for clients on 127.0.0.1 only and serve a directory the test fills with ROOT
files it writes itself. They are plain classes with ``start()``/``stop()`` (and context
managers) so that ``conftest.py`` only wires them into fixtures.

:class:`FileHTTPServer` speaks enough HTTP/1.1 for uproot's ``HTTPSource`` and for
``urllib``: ``HEAD`` with ``Content-Length`` and ``Accept-Ranges``, single byte ranges
(``bytes=a-b``, ``bytes=a-``, ``bytes=-n``) answered 206 with ``Content-Range``, several
ranges answered 206 ``multipart/byteranges`` (what uproot asks for first), 416 for a range
past the end, 404 for a missing file. Its ``faults`` dict injects failures:

``fail_next``
    answer the next N requests with ``fail_status`` (503 unless set), then serve normally.
``truncate``
    send only this many bytes of a whole-file ``GET`` while announcing the full
    ``Content-Length``, then drop the connection (a transfer cut short).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing_extensions import Self

HOST = "127.0.0.1"
BLOCK = 64 * 1024
_RANGE_SPEC = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float, alive=lambda: True) -> None:
    """Return once 127.0.0.1:``port`` accepts connections; raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"the server for port {port} exited while starting")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing accepted connections on {HOST}:{port} within {timeout} s")


def parse_ranges(header: str, size: int) -> list[tuple[int, int]] | None:
    """The satisfiable ``[start, stop)`` ranges of a ``Range`` header for a ``size``-byte file.

    ``None`` when the header is not a valid byte-range set (RFC 9110 says: ignore it and send
    the whole file); an empty list when it is valid but no range is satisfiable (416).
    """
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or not spec.strip():
        return None
    out = []
    for part in spec.split(","):
        match = _RANGE_SPEC.match(part)
        if match is None:
            return None
        first, last = match.groups()
        if not first and not last:
            return None
        if not first:  # suffix: the last n bytes
            n = int(last)
            if n > 0 and size > 0:
                out.append((max(size - n, 0), size))
            continue
        start = int(first)
        if last and int(last) < start:
            return None
        if start >= size:
            continue
        stop = size if not last else min(int(last) + 1, size)
        out.append((start, stop))
    return out


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as uproot's HTTPSource expects
    timeout = 10  # an idle keep-alive connection is closed after this many seconds
    server: _ThreadingServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.untrack(self.connection)

    def log_message(self, format: str, *args) -> None:
        pass  # quiet: requests are recorded in FileHTTPServer.requests instead

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _serve(self, *, head: bool) -> None:
        owner = self.server.owner
        owner.record(self.command, self.path, self.headers.get("Range"))
        try:
            failure = owner.take_failure()
            if failure is not None:
                self._plain(failure, b"injected failure\n")
                return
            path = owner.local_path(self.path)
            if path is None:
                self._plain(404, b"not found\n")
                return
            self._send_file(path, head=head)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away; nothing to answer

    def _plain(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_file(self, path: Path, *, head: bool) -> None:
        size = path.stat().st_size
        header = self.headers.get("Range")
        ranges = parse_ranges(header, size) if header else None
        if ranges is None:
            self._send_whole(path, size, head=head)
        elif not ranges:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif len(ranges) == 1:
            start, stop = ranges[0]
            self.send_response(206)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{size}")
            self.send_header("Content-Length", str(stop - start))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if not head:
                with path.open("rb") as fh:
                    fh.seek(start)
                    self.wfile.write(fh.read(stop - start))
        else:
            self._send_multipart(path, size, ranges, head=head)

    def _send_whole(self, path: Path, size: int, *, head: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if head:
            return
        limit = self.server.owner.faults.get("truncate")
        remaining = size if limit is None else min(int(limit), size)
        with path.open("rb") as fh:
            while remaining > 0:
                block = fh.read(min(BLOCK, remaining))
                if not block:
                    break
                self.wfile.write(block)
                remaining -= len(block)
        if limit is not None:
            self.wfile.flush()
            self.close_connection = True  # the client sees the body end early

    def _send_multipart(
        self, path: Path, size: int, ranges: list[tuple[int, int]], *, head: bool
    ) -> None:
        boundary = "rootml-byteranges-boundary"
        parts = []
        with path.open("rb") as fh:
            for start, stop in ranges:
                fh.seek(start)
                head_lines = (
                    f"--{boundary}\r\n"
                    "Content-Type: application/octet-stream\r\n"
                    f"Content-Range: bytes {start}-{stop - 1}/{size}\r\n\r\n"
                )
                parts += [head_lines.encode(), fh.read(stop - start), b"\r\n"]
        parts.append(f"--{boundary}--\r\n".encode())
        body = b"".join(parts)
        self.send_response(206)
        self.send_header("Content-Type", f"multipart/byteranges; boundary={boundary}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if not head:
            self.wfile.write(body)


class _ThreadingServer(ThreadingHTTPServer):
    """Joins every handler thread on close, after cutting the connections still open."""

    daemon_threads = False
    block_on_close = True

    def __init__(self, owner: FileHTTPServer):
        self.owner = owner
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__((HOST, 0), _Handler)

    def track(self, conn: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(conn)

    def untrack(self, conn: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(conn)

    def cut_connections(self) -> None:
        with self._connections_lock:
            for conn in self._connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request, client_address) -> None:  # noqa: ARG002
        # a client that hung up mid-response is normal in these tests; anything else is a bug
        # in this server and is recorded for the test to see
        exc = sys.exc_info()[1]
        if not isinstance(exc, (ConnectionError, TimeoutError)):
            self.owner.errors.append(exc)


class FileHTTPServer:
    """Serves the files under ``root`` at ``http://127.0.0.1:PORT/`` from a background thread."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.faults: dict[str, int | None] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.errors: list[BaseException] = []  # unexpected exceptions in handlers
        self._lock = threading.Lock()
        self._httpd: _ThreadingServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the server is not started")
        return self._httpd.server_address[1]

    def url(self, relpath: str | Path = "") -> str:
        """The URL of ``root/relpath`` (which need not exist: a missing file is a 404)."""
        quoted = urllib.parse.quote(Path(relpath).as_posix().lstrip("/"))
        return f"http://{HOST}:{self.port}/{quoted}"

    def start(self) -> FileHTTPServer:
        self._httpd = _ThreadingServer(self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.cut_connections()
        self._httpd.server_close()  # joins the handler threads
        self._thread.join()
        self._httpd = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # called from handler threads
    def record(self, method: str, path: str, range_header: str | None) -> None:
        with self._lock:
            self.requests.append((method, path, range_header))

    def take_failure(self) -> int | None:
        with self._lock:
            left = self.faults.get("fail_next") or 0
            if left <= 0:
                return None
            self.faults["fail_next"] = left - 1
            return int(self.faults.get("fail_status") or 503)

    def local_path(self, url_path: str) -> Path | None:
        rel = urllib.parse.unquote(urllib.parse.urlsplit(url_path).path).lstrip("/")
        path = (self.root / rel).resolve()
        if not path.is_relative_to(self.root) or not path.is_file():
            return None
        return path


class XRootDServer:
    """An ``xrootd`` daemon exporting ``root``, on a free port, for ``root://`` tests.

    xrootd refuses to run as root, so when the tests run as root it runs as ``user``
    (``nobody``): ``root`` and ``workdir`` (config, admin path, log) must then be reachable by
    that user, which is why :func:`make_xrootd_dirs` makes them outside pytest's owner-only
    temp tree, and :meth:`url` makes the file it names world-readable. Needs the ``xrootd``
    binary (Debian: ``xrootd-server``).
    """

    def __init__(
        self, root: str | Path, workdir: str | Path, *, user: str = "nobody", binary="xrootd"
    ):
        self.root = Path(root).resolve()
        self.workdir = Path(workdir).resolve()
        self.user = user
        self.binary = shutil.which(binary) or binary
        self.port: int | None = None
        self._proc: subprocess.Popen | None = None

    def url(self, relpath: str | Path = "") -> str:
        """``root://127.0.0.1:PORT//abs/path`` of ``root/relpath`` (the XRootD form of an
        absolute path: the double slash after the port)."""
        path = self.root / relpath
        if path.exists():
            _readable_by_all(path, self.root)
        return f"root://{HOST}:{self.port}/{path.as_posix()}"

    @property
    def config_text(self) -> str:
        """The whole configuration: export ``root`` (no ``oss.localroot``, so URLs carry the
        real absolute path), accept clients from 127.0.0.1 only, keep state in ``workdir``."""
        return (
            f"xrd.port {self.port}\n"
            f"xrd.allow host {HOST}\n"
            f"all.export {self.root.as_posix()}\n"
            f"all.adminpath {self.workdir.as_posix()}\n"
            f"all.pidpath {self.workdir.as_posix()}\n"
        )

    @property
    def log_path(self) -> Path:
        return self.workdir / "xrootd.log"

    def start(self, *, timeout: float = 20.0, attempts: int = 3) -> XRootDServer:
        run_as = {}
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            account = pwd.getpwnam(self.user)
            run_as = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
            os.chown(self.workdir, account.pw_uid, account.pw_gid)
            _readable_by_all(self.root, self.root)
        last: Exception | None = None
        for _ in range(attempts):  # another process may take the free port first
            self.port = free_port()
            config = self.workdir / "xrootd.cfg"
            config.write_text(self.config_text)
            config.chmod(0o644)
            with (self.workdir / "xrootd.out").open("ab") as out:
                self._proc = subprocess.Popen(
                    [self.binary, "-c", str(config), "-l", str(self.log_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    **run_as,
                )
            try:
                wait_for_port(self.port, timeout, alive=lambda: self._proc.poll() is None)
                return self
            except (RuntimeError, TimeoutError) as err:
                last = err
                self.stop()
        raise RuntimeError(f"xrootd did not start: {last}; see {self.workdir}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _readable_by_all(path: Path, top: Path) -> None:
    """Add read (and, for directories, search) permission for others on ``path`` and on
    each directory from ``top`` down to it."""
    chain = [path, *(p for p in path.parents if p.is_relative_to(top))]
    for item in chain:
        mode = item.stat().st_mode
        extra = stat.S_IROTH | (stat.S_IXOTH if item.is_dir() else 0)
        if mode & extra != extra:
            item.chmod(mode | extra)


def make_xrootd_dirs() -> tuple[Path, Path, Path]:
    """``(base, root, workdir)``: fresh directories for :class:`XRootDServer`, outside pytest's
    owner-only temp tree so an unprivileged daemon can reach them. Remove ``base`` after."""
    base = Path(tempfile.mkdtemp(prefix="rootml-xrootd-"))
    base.chmod(0o755)
    root, workdir = base / "data", base / "run"
    root.mkdir(mode=0o755)
    workdir.mkdir(mode=0o755)
    return base, root, workdir

"""Warm interpreters for the local engine: each step's ``rootml`` command forks from a process
that has already imported what it needs, instead of starting a fresh Python.

A fresh interpreter pays ~0.5 s to import numpy/uproot/awkward/h5py/jsonschema and 4-8 s more
for TensorFlow, Keras and tf2onnx; with every step a new process, a small run spent most of its
time importing. ``rootml run --engine local`` therefore starts two servers before yadage:

- ``data``: the data path's modules, and evaluation's (it scores through onnxruntime);
- ``model``: the common ones (no uproot, no awkward) plus TensorFlow, Keras, tf2onnx and
  onnxruntime, for training. It imports while the data steps run, so its start-up overlaps
  work instead of adding to it; the data server and its commands run at a lower CPU priority
  (nice 10), so that on a small machine this import, which training waits for, is not the
  one slowed down, nor training itself.

Each server is ready once :data:`PRELOAD` is imported; what only the last commands use
(:data:`LATER`: matplotlib, scipy, the report for ``features`` and ``evaluate``) is imported
when ``rootml run`` asks for it (:meth:`Pool.preload`, once the data path is done, so the
data steps are not kept waiting), one module between commands. While TensorFlow loads,
Keras's optional imports of scikit-learn and matplotlib (its scikit-learn wrappers and
image-gallery plot, which rootml never calls) are refused (:data:`REFUSED_WHILE_LOADING`):
they cost ~1.2 s of the ~4.5 s that training waits for. Both stay importable afterwards, for
a model file too.

Each listens on a Unix socket in a private folder that also holds a ``rootml`` launcher; the
plugin puts that folder first on the step's ``PATH``, so the steps' scripts are unchanged. The
launcher (:mod:`.warmclient`, standard library only) sends its argv, folder, environment, umask
and standard streams (as file descriptors) to the server for its subcommand; the server forks,
and the child becomes the command: same streams, folder and environment, exit status passed
back as the launcher's own. A signal sent to the launcher is passed on; a launcher that dies
takes its command with it. Without a server (plain ``yadage-run``, a server that could not
start) the launcher execs ``python -m rootml`` as before.

The outputs are those of a fresh process: every seed is set by the command itself, nothing is
computed in the server but imports and the environment record, and the tests compare a warm
run's weights with a cold one's.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import importlib.abc
import json
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

from . import warmclient

log = logging.getLogger(__name__)

#: the environment variable naming the servers' folder (read by the launcher)
ENV = warmclient.ENV

#: CPU priority of each server and its commands (``os.nice`` increment); ``train``,
#: ``evaluate`` (of the train image) and ``publish`` are the Docker engine's warm containers
#: (:mod:`.warmdocker`); ``data`` serves both engines
NICE = {"data": 10, "model": 0, "train": 0, "evaluate": 10, "publish": 10}

#: what each server imports before it accepts a command
_COMMON = ("numpy", "h5py", "jsonschema", "yaml", "rootml.cli", "rootml.workflow.provenance")
PRELOAD = {
    "data": (
        *_COMMON,
        "awkward",
        "uproot",
        "rootml.fetching",
        "rootml.specs",
        "rootml.columns",
        "rootml.merging",
        "rootml.preprocessing",
        "rootml.publishing",
    ),
    # training reads shards (h5py) and needs neither uproot nor awkward
    "model": (
        *_COMMON,
        "tensorflow",
        "keras",
        "tf2onnx",
        "onnx",
        "onnxruntime",
        "rootml.training",
        "rootml.bundle",
    ),
}
PRELOAD["train"] = PRELOAD["model"]  # the train image's training and model check
PRELOAD["evaluate"] = _COMMON  # the train image's features and evaluate: LATER, at once
PRELOAD["publish"] = (*_COMMON, "rootml.publishing")

#: imported once the server is ready, one module between commands (features draws; evaluate
#: scores, tests and draws); one that is missing is left to the command that needs it
LATER = {
    "data": (
        "matplotlib.figure",
        "matplotlib.style",
        "matplotlib.backends.backend_agg",
        "mplhep",
        "rootml.plots",
        "rootml.report",
        "onnxruntime",
        "scipy.stats",
        "rootml.scoring",
        "rootml.metrics",
    ),
    "model": (),
    "publish": (),
}
LATER["train"] = ()
LATER["evaluate"] = LATER["data"]

#: servers that start their LATER imports as soon as they are ready (nothing else runs there
#: that they could slow down, and they run niced)
EAGER = ("evaluate",)

#: top-level packages that the :data:`PRELOAD` imports may not import (Keras imports both if
#: they are installed, for features rootml does not use, and handles their absence)
REFUSED_WHILE_LOADING = ("sklearn", "matplotlib")


class _Refuse(importlib.abc.MetaPathFinder):
    """A finder that answers ``ImportError`` for :data:`REFUSED_WHILE_LOADING`."""

    def find_spec(self, name, path=None, target=None) -> None:  # noqa: ARG002 (the protocol)
        if name.partition(".")[0] in REFUSED_WHILE_LOADING:
            raise ImportError(f"{name} is imported later by the warm interpreter", name=name)


@contextlib.contextmanager
def _refusing() -> Iterator[None]:
    finder = _Refuse()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


def _import_later(module: str) -> None:
    try:
        __import__(module)
    except Exception as err:  # noqa: BLE001 (the command that needs it reports it properly)
        log.debug("warm interpreter: %s not preloaded (%s)", module, err)


# ------------------------------------------------------------------ the pool (rootml run)


#: which server runs training (and ``check-model``) and which evaluation, by engine
LOCAL_ROLES = {"model": "model", "evaluate": "data"}
IMAGE_ROLES = {"model": "train", "evaluate": "evaluate"}


class Pool:
    """The servers of one run; :attr:`env` is what a step needs to use them (locally the
    launcher's folder for ``PATH`` and :data:`ENV`; under Docker the ``docker run`` flags),
    empty once closed or when none runs. :attr:`roles` names the server of training
    (``"model"``) and of evaluation (``"evaluate"``); :attr:`containers` the warm containers
    (kind -> name) under Docker."""

    def __init__(
        self,
        folder: Path | None,
        procs: dict[str, subprocess.Popen],
        roles: dict[str, str] = LOCAL_ROLES,
        containers: dict[str, str] | None = None,
    ) -> None:
        self.folder = folder
        self.procs = procs
        self.roles = roles
        self.containers = dict(containers or {})
        self.env: dict[str, str] = {}
        if folder is not None and not self.containers:
            self.env = {ENV: str(folder), "ROOTML_WARM_BIN": str(folder / "bin")}

    @classmethod
    def none(cls) -> Pool:
        return cls(None, {})

    def settled(self, kind: str) -> bool:
        """Whether server ``kind`` has done its imports, or will not (it exited, or none
        runs): after that its imports no longer compete for the CPU."""
        proc = self.procs.get(kind)
        if self.folder is None or proc is None or proc.poll() is not None:
            return True
        return (self.folder / f"{kind}.sock.ready").exists()

    def preload(self, kind: str) -> None:
        """Ask server ``kind`` to import its :data:`LATER` modules now (between commands)."""
        if self.folder is None or kind not in self.procs:
            return
        with (
            contextlib.suppress(OSError),
            socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s,
        ):
            s.connect(str(self.folder / f"{kind}.sock"))
            s.send(json.dumps({"preload": True}).encode())

    def close(self) -> None:
        """Stop the servers (nothing of theirs is worth a graceful exit) and drop the folder."""
        self.env = {}
        if self.containers:
            subprocess.run(
                ["docker", "rm", "--force", *self.containers.values()],
                capture_output=True,
                check=False,
            )
            self.containers = {}
        for proc in self.procs.values():
            proc.kill()
        for proc in self.procs.values():
            proc.wait()
        self.procs = {}
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


#: the local engine's servers (the others are the Docker engine's warm containers)
LOCAL_KINDS = ("data", "model")


@contextlib.contextmanager
def servers(log_path: Path, kinds: tuple[str, ...] = LOCAL_KINDS) -> Iterator[Pool]:
    """Start the local servers (both by default) for the length of the block."""
    folder = Path(tempfile.mkdtemp(prefix="rootml-warm-"))
    pool = Pool(folder, {})
    try:
        write_launcher(folder / "bin" / "rootml", f"{sys.executable} -S")
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
        with open(log_path, "ab") as out:
            for kind in kinds:
                cmd = [sys.executable, "-m", __name__, kind, str(folder / f"{kind}.sock")]
                pool.procs[kind] = subprocess.Popen(
                    cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env
                )
        wait_bound(folder, pool.procs)
        yield pool
    finally:
        pool.close()


def write_launcher(path: Path, shebang: str) -> None:
    """The ``rootml`` launcher (:mod:`.warmclient`) at ``path``, run by ``shebang``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    source = Path(warmclient.__file__).read_text("utf-8")
    path.write_text(f"#!{shebang}\n{source}", "utf-8")
    path.chmod(0o755)


def wait_bound(folder: Path, procs: dict[str, subprocess.Popen], timeout: float = 10.0) -> None:
    """Until every server's socket exists (they bind before importing), or one has died:
    a launcher finding no socket would fall back to a cold start, which is only slower."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all((folder / f"{kind}.sock").exists() for kind in procs):
            return
        if any(p.poll() is not None for p in procs.values()):
            log.warning("a warm interpreter exited at start; steps start cold")
            return
        time.sleep(0.01)


# ------------------------------------------------------------------ one server


def serve(kind: str, path: str) -> None:
    """Bind ``path``, import :data:`PRELOAD` ``[kind]``, then fork one child per launcher."""
    _die_with_parent()
    if NICE[kind]:
        os.nice(NICE[kind])
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    tmp = f"{path}.{os.getpid()}"
    listener.bind(tmp)
    listener.listen(64)
    Path(tmp).replace(path)  # launchers connecting now wait in the backlog until imports end
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    t0 = time.perf_counter()
    with _refusing():
        for module in PRELOAD[kind]:
            __import__(module)
    from .provenance import local_environment

    local_environment()  # computed once; every child inherits it
    Path(f"{path}.ready").touch()
    sys.stdout.write(f"warm {kind}: ready in {time.perf_counter() - t0:.1f} s\n")
    sys.stdout.flush()
    children: dict[int, list] = {}  # pidfd -> [pid, launcher connection, launcher still there]
    later: list[str] = list(LATER[kind]) if kind in EAGER else []
    try:
        while True:
            watched = [listener, *children, *(c for _, c, there in children.values() if there)]
            ready, _, _ = select.select(watched, [], [], 0 if later else None)
            if not ready and later:
                _import_later(later.pop(0))
            for item in ready:
                if item is listener:
                    if _accept(listener, children, kind) == "preload":
                        later = list(LATER[kind])
                elif isinstance(item, int):
                    _reap(item, children)
                else:
                    _from_launcher(item, children)
    finally:
        Path(path).unlink(missing_ok=True)
        Path(f"{path}.ready").unlink(missing_ok=True)


def _accept(listener: socket.socket, children: dict, kind: str) -> str | None:
    """Fork a child for a launcher's command (``"command"``, one line in the log); a preload
    request is only answered ``"preload"`` (the loop starts the :data:`LATER` imports); None:
    unreadable."""
    conn, _ = listener.accept()
    try:
        data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
        request = json.loads(data)
    except (OSError, ValueError):
        conn.close()
        return None
    if request.get("preload"):
        for fd in fds:
            os.close(fd)
        conn.close()
        return "preload"
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        listener.close()
        for _, other, _ in children.values():
            other.close()
        for pidfd in children:
            os.close(pidfd)
        _child(conn, request, fds)  # never returns
    for fd in fds:
        os.close(fd)
    children[os.pidfd_open(pid)] = [pid, conn, True]
    _send(conn, {"pid": pid})
    argv = [a for a in request.get("argv") or [] if not a.startswith("-")]
    sys.stdout.write(f"warm {kind}: {' '.join(argv[:1])} (pid {pid}) in {request.get('cwd')}\n")
    sys.stdout.flush()
    return "command"


def _reap(pidfd: int, children: dict) -> None:
    pid, conn, _ = children.pop(pidfd)
    os.close(pidfd)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    _send(conn, {"status": code if code >= 0 else 128 - code})
    conn.close()


def _from_launcher(conn: socket.socket, children: dict) -> None:
    """A launcher passed on a signal it got: send it to its command. Or it closed its end
    before its command ended (it was killed): end the command too. Its exit is reaped as usual."""
    try:
        message = json.loads(conn.recv(4096) or b"{}")
    except (OSError, ValueError):
        message = {}
    for child in children.values():
        if child[1] is conn:
            signum = message.get("signal")
            if not isinstance(signum, int):
                child[2] = False
                signum = signal.SIGTERM
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(child[0], signum)
            return


def _send(conn: socket.socket, doc: dict) -> None:
    with contextlib.suppress(OSError):
        conn.send(json.dumps(doc).encode())


def _child(conn: socket.socket, request: dict, fds: list[int]) -> None:
    """Become the launcher's command: its streams, folder, environment and argv."""
    code = 1
    try:
        conn.close()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _die_with_parent()  # a server that dies takes its commands along (their launchers fail)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.umask(request["umask"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["rootml", *request["argv"]]
        logging.root.handlers.clear()  # the CLI configures logging as in a fresh process
        from ..cli import main

        try:
            code = main(request["argv"])
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        except BaseException:  # noqa: BLE001 (this is the process's top level: print, exit 1)
            traceback.print_exc()
            code = 1
        atexit._run_exitfuncs()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code or 0)


def _die_with_parent() -> None:
    """SIGTERM when ``rootml run`` goes, however it goes (Linux; elsewhere a no-op)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rootml.workflow.warm")
    parser.add_argument("kind", choices=sorted(PRELOAD))
    parser.add_argument("socket")
    args = parser.parse_args(argv)
    serve(args.kind, args.socket)


if __name__ == "__main__":
    main()

"""Ending a workflow run with everything it started.

yadage runs each step in a worker of its process pool. A yadage that ends, on its own (a step
failed) or because ``rootml run`` stopped it, does not end a worker's step: the worker, now an
orphan, runs it to the end and writes into the workdir after ``rootml run`` has returned (and a
cold ``python -m rootml`` started once the warm servers are gone runs a whole preprocess job).
So every process of the run carries a mark in its environment, :func:`mark`, which it passes
on to what it starts (steps, their ``rootml`` launchers, ``docker run`` clients), and
:func:`end_workflow` ends every process holding this run's mark, wherever it has been
reparented. The processes' environments are read from ``/proc`` (Linux); elsewhere the
processes below yadage, while it lives, are ended.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from contextlib import suppress
from pathlib import Path

#: the variable naming this run in the environment of yadage and all it starts
MARK = "ROOTML_RUN_MARK"

_TOKEN = uuid.uuid4().hex
_PROC = Path("/proc")


def mark() -> dict[str, str]:
    """The environment entry that marks a process as this run's."""
    return {MARK: _TOKEN}


def end_workflow(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """End ``proc`` (yadage) and every process of the run: stopped first (SIGSTOP) until no
    new one appears, so that a step starting meanwhile is caught, then SIGTERM (a step's
    ``rootml`` launcher passes it on to its warm command, a ``docker run`` client to its
    container) and SIGKILL to any left after ``grace`` seconds."""
    marked = _marked if _PROC.is_dir() else (lambda: _descendants(proc.pid))
    tree = _stopped(lambda: [proc.pid, *marked()])
    for signum in (signal.SIGTERM, signal.SIGCONT):
        for pid in tree:
            _signal(pid, signum)
    deadline = time.monotonic() + grace
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    while (left := [p for p in tree if p != proc.pid and _alive(p)]) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.05)
    for pid in left:
        _signal(pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _stopped(listing) -> list[int]:
    tree: list[int] = []
    while new := [p for p in listing() if p not in tree and p != os.getpid()]:
        for pid in new:
            _signal(pid, signal.SIGSTOP)
        tree += new
    return tree


def _signal(pid: int, signum: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def _marked() -> list[int]:
    """The running processes whose environment holds this run's mark."""
    needle = f"{MARK}={_TOKEN}".encode()
    found = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        with suppress(OSError):
            if needle in (entry / "environ").read_bytes().split(b"\0") and _alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from ``ps`` (where there is no ``/proc``)."""
    listing = subprocess.run(
        ["ps", "-A", "-o", "pid=,ppid="], capture_output=True, text=True, check=False
    ).stdout
    children: dict[int, list[int]] = {}
    for line in listing.splitlines():
        child, _, parent = line.strip().partition(" ")
        with suppress(ValueError):
            children.setdefault(int(parent.strip()), []).append(int(child))
    found, todo = [], [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


def _alive(pid: int) -> bool:
    """``pid`` runs (a zombie, ended but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with suppress(OSError, IndexError):
        return (_PROC / str(pid) / "stat").read_text().rsplit(") ", 1)[1][0] != "Z"
    return True

"""Packtivity plugin: run rootml's steps as local processes, and record every step.

Loaded by ``yadage-run --plugins rootml.workflow.plugin`` (the ``PACKTIVITY_PLUGINS``
variable alone is ignored by yadage-run). It takes over packtivity's handler for
``docker-encapsulated`` environments, the only kind REANA runs:

- ``ROOTML_ENGINE=local`` (the default): the step's script goes to its interpreter (``bash -euo pipefail``) on
  stdin, or its one-line command to ``sh -c``, in the step folder, with this interpreter's
  ``bin`` folder first on ``PATH`` so ``rootml`` is the one installed beside yadage. Its
  output goes where packtivity puts a container's: ``_packtivity/<step>.run.log``.
- ``ROOTML_ENGINE=docker``: the ``docker run`` command line packtivity's Docker handler builds
  (its ``race_spec`` and ``docker_execution_cmdline``: the step's image, its mounts,
  ``PACKTIVITY_DOCKER_CMD_MOD``), run here with the script on stdin and the output in the same
  log. (packtivity's own runner sleeps 0.5 s after starting every container and then
  busy-waits for it: half a second per step on the critical path of a small run.) Nothing is
  pulled: ``rootml run`` builds the images.

Either way the step leaves ``_rootml/step.json`` in its folder: name, engine, image (and its
id under Docker) or interpreter, start and end times, status and log path. ``rootml run``
reads these records for its progress display, its failure report and the run's provenance.

The override happens at import time in the process that imports this module; yadage's
``multiproc`` backend forks its workers afterwards (Python's default on Linux), so they see it.

It also makes yadage's step cache (``yadage-run -c checksums``, what ``rootml run --resume``
uses) usable and writes it atomically (a kill mid-write left a cut file). yadage keys a
cached step by its state, whose upstream folders come in the iteration order of a set of
random node ids, so a step with two upstream stages got a new key on every run and was never
found again. The key here lists those folders sorted.

And it keeps yadage's own bookkeeping from eating a core: yadage parses the same few JSONPath
expressions thousands of times a run, and jsonpath_rw builds a new PLY parser (its LALR tables)
for every parse, ~7 ms each; parsed expressions are immutable, so they are kept by text here.
Every time a finished step's result is read (every poll), packtivity's TypedLeafs re-runs a jq
program over the whole document to find strings starting with its leaf "magics"
(``b64json://``); when the document's JSON text holds no magic at all, that search cannot find
anything and is skipped (the JSON round trip it also does is kept).
(``rootml run`` also turns off yadage's prepublishing, which re-serialised every node's
parameters through jq on every poll: 26 s of CPU in a 40 s run of four files.)
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import checksumdir
import jsonpath_rw
from packtivity.handlers.execution_handlers import (
    docker_execution_cmdline,
    handlers,
    race_spec,
)
from packtivity.typedleafs import TypedLeafs
from yadage.backends.caching import CacheBuilder
from yadage.utils import json_hash

from . import RECORD
from .docker import image_id

ENGINES = ("local", "docker")

log = logging.getLogger(__name__)


def engine() -> str:
    name = os.environ.get("ROOTML_ENGINE", "local")
    if name not in ENGINES:
        raise RuntimeError(f"ROOTML_ENGINE must be one of {ENGINES}, got {name!r}")
    return name


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def _write(path: Path, doc: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1), "utf-8")
    tmp.replace(path)


def run_local(state, job: dict, log_path: Path) -> int:
    """Run one packtivity job as a local process; returns its exit status."""
    workdir = Path(state.readwrite[0])
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    first = [str(Path(sys.executable).parent)]
    if env.get("ROOTML_WARM_BIN"):  # rootml run's warm interpreters (rootml.workflow.warm)
        first.insert(0, env["ROOTML_WARM_BIN"])
    env["PATH"] = os.pathsep.join([*first, env.get("PATH", "")])
    env.setdefault("PYTHONUNBUFFERED", "1")
    if "script" in job:
        # an interpreter with options ("bash -euo pipefail") is a shell word list, as the
        # `sh -c` of packtivity's Docker handler and of REANA's job controller reads it
        argv, stdin = shlex.split(job["interpreter"]), job["script"].encode()
    elif "command" in job:
        argv, stdin = ["sh", "-c", job["command"]], None
    else:
        raise RuntimeError(f"rootml's local engine runs scripts and commands, not {sorted(job)}")
    with open(log_path, "ab") as log:
        proc = subprocess.run(
            argv,
            input=stdin,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=env,
            check=False,
        )
    return proc.returncode


def run_docker(config, environment, state, job, metadata, log_path: Path) -> int:
    """Run one packtivity job in its image with packtivity's own ``docker run`` command line;
    returns its exit status."""
    spec = race_spec(config, state, environment, log, job)
    cmdline = docker_execution_cmdline(config, state, log, metadata, spec)
    stdin = spec["stdin"].encode() if spec["stdin"] else None
    with open(log_path, "ab") as out:
        out.write(f"# {cmdline}\n".encode())
        out.flush()
        proc = subprocess.run(
            shlex.split(cmdline),
            input=stdin,
            stdin=None if stdin else subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    return proc.returncode


def docker_encapsulated(config, environment, state, job, metadata):
    """packtivity executor for ``docker-encapsulated`` steps (see the module docstring)."""
    name = metadata["name"]
    workdir = Path(state.readwrite[0])
    record_path = workdir / RECORD
    record_path.parent.mkdir(parents=True, exist_ok=True)
    metadir = Path(state.metadir)
    metadir.mkdir(parents=True, exist_ok=True)
    log_path = metadir / f"{name}.run.log"
    image = f"{environment['image']}:{environment['imagetag']}"
    chosen = engine()
    record = {
        "name": name,
        "engine": chosen,
        "image": image,
        "image_id": image_id(image) if chosen == "docker" else None,
        "interpreter": sys.executable if chosen == "local" else None,
        "workdir": str(workdir),
        "log": str(log_path),
        "started": _now(),
        "status": "running",
    }
    _write(record_path, record)
    t0 = time.perf_counter()
    status, error = "failed", None
    try:
        if chosen == "docker":
            returncode = run_docker(config, environment, state, job, metadata, log_path)
        else:
            returncode = run_local(state, job, log_path)
        if returncode:
            error = f"exit status {returncode}"
            raise RuntimeError(f"step {name} failed ({error}); its log: {log_path}")
        status = "done"
    except Exception as err:
        error = error or str(err)
        raise
    finally:
        record.update(
            status=status,
            finished=_now(),
            seconds=round(time.perf_counter() - t0, 3),
            error=error,
        )
        _write(record_path, record)


def stable_cacheid(self, task) -> str:  # noqa: ARG001 (a method of CacheBuilder)
    """yadage's cache key (state, parameters, spec) with the upstream folders in sorted order."""
    doc = task.json()
    state = dict(doc["state"])
    state["readonly"] = sorted(d["path"] for d in state.get("readonly", ()))
    return json_hash([state, doc["parameters"], doc["spec"]])


# the original, also when this module is imported a second time (the patch is idempotent)
_normalize_with_jq = getattr(
    TypedLeafs._TypedLeafs__normalize, "original", TypedLeafs._TypedLeafs__normalize
)


def _normalize(self, idleafs=True):
    """TypedLeafs' normalisation without its jq search when no leaf magic can match."""
    text = self._dump_to_string(self._TypedLeafs__jsonable)
    if idleafs and any(magic in text for magic in self._leafmodel.magics):
        return _normalize_with_jq(self, idleafs)
    self._TypedLeafs__jsonable = self._load_from_string(text, typed=False)
    return None


_normalize.original = _normalize_with_jq

_filehash_by_reading = getattr(checksumdir._filehash, "original", checksumdir._filehash)
_file_hashes: dict[tuple, str] = {}


def _filehash(filepath: str, hashfunc) -> str:
    """checksumdir's content hash of one file, computed once while the file is unchanged."""
    try:
        st = Path(filepath).stat()
    except OSError:
        return _filehash_by_reading(filepath, hashfunc)
    key = (filepath, hashfunc, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _file_hashes:
        _file_hashes[key] = _filehash_by_reading(filepath, hashfunc)
    return _file_hashes[key]


_filehash.original = _filehash_by_reading


def _cache_todisk(self) -> None:
    """yadage's step cache written atomically: yadage rewrites the file in place after every
    finished step, so a run killed while it writes left an empty or cut file, and the resume
    failed reading it ("Expecting value: line 1 column 1")."""
    path = Path(self.cachefile)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(self.cache, indent=4, sort_keys=True), "utf-8")
    tmp.replace(path)


checksumdir._filehash = _filehash
CacheBuilder.cacheid = stable_cacheid
CacheBuilder.todisk = _cache_todisk
TypedLeafs._TypedLeafs__normalize = _normalize
if not hasattr(jsonpath_rw.parse, "cache_info"):  # imported twice: wrap once
    jsonpath_rw.parse = functools.lru_cache(maxsize=4096)(jsonpath_rw.parse)
handlers["docker-encapsulated"]["default"] = docker_encapsulated
handlers["docker-encapsulated"]["rootml"] = docker_encapsulated

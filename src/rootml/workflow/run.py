"""``rootml run``: the whole workflow, with yadage, in Docker or as local processes.

1. the input (``input.yml`` or an MLaaS4HEP folder) becomes the run's ``init/`` folder;
2. the engine is chosen: Docker when an engine answers and the step images exist (or build),
   else local processes (the packtivity plugin in :mod:`.plugin`);
3. without a TFaaS URL, the embedded ``rootml serve`` starts on 127.0.0.1 (containers reach it
   through ``--network host``);
4. ``yadage-run`` runs ``workflows/main.yml`` in the run folder, with step caching on so that
   ``--resume`` re-runs only what failed or never ran, while this process prints each step
   as it starts and ends;
5. a failed step ends the run with its log's tail and a non-zero exit; a good run ends with the
   test AUC, where the bundle, report and receipt are, and one prediction from the served model.
"""

from __future__ import annotations

import fcntl
import importlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from .. import tracking
from ..exceptions import WorkflowError
from ..server.config import ServerConfig
from ..server.launch import EmbeddedServer, free_port
from ..storage import atomic_path
from . import RECORD, docker, processes, provenance, warm, warmdocker
from .inputs import RunInput, from_input_yml, from_mlaas4hep, load_yaml, prepare

PLUGIN = "rootml.workflow.plugin"
WORKFLOW = "workflows/main.yml"
STEPS = "steps/steps.yml"
RUN_RECORD = "run.json"
LOCK = ".rootml.lock"
LOG_TAIL = 40
#: yadage-run runs this much below rootml run's priority (os.nice) when warm servers run
YADAGE_NICE = 5


def spec_root() -> Path:
    """The folder holding ``workflows/`` and ``steps/``: the source checkout this package runs
    from, else the copy installed inside the package."""
    here = Path(__file__).resolve()
    for root in (here.parents[3], here.parent / "spec"):
        if (root / WORKFLOW).is_file() and (root / STEPS).is_file():
            return root
    raise WorkflowError(f"cannot find {WORKFLOW} beside the rootml package ({here.parent})")


@dataclass(frozen=True)
class RunOptions:
    input: Path | None = None
    mlaas4hep: Path | None = None
    engine: str | None = None  # auto, docker, local; None: auto, or a resumed run's engine
    workdir: Path = Path("rootml-run")
    resume: bool = False
    url: str | None = None
    name: str | None = None
    jobs: int = 4
    parallel: int = 0
    serve: bool = False
    warm: bool = True  # local engine: steps fork from interpreters with their imports done
    checksums: tuple[str, ...] | None = None  # one sha256 per input file (rootml replay)
    mlflow: str | None = None  # tracking URI; "default": an SQLite store in the run folder


@dataclass
class Step:
    name: str
    status: str
    seconds: float | None
    record: dict


# ------------------------------------------------------------------ the embedded server


def _server_port(folder: Path) -> int:
    """The embedded server's port, kept in ``folder``: a resumed run serves at the same URL
    (its model store is the same folder), so that the publish step's inputs are unchanged and
    a finished step is not run again."""
    record = folder / "port"
    try:
        wanted = int(record.read_text("utf-8"))
    except (OSError, ValueError):
        wanted = 0
    port = free_port(wanted=wanted)
    if port != wanted:
        with atomic_path(record) as tmp:
            tmp.write_text(f"{port}\n", "utf-8")
    return port


# ------------------------------------------------------------------ progress and results


def step_records(workdir: Path, cache: dict | None = None) -> dict[str, Step]:
    """Every step's record in ``workdir``; ``cache`` (a dict kept by the caller) skips the
    records unchanged since the last call (same size and modification time)."""
    cache = {} if cache is None else cache
    steps = {}
    for path in sorted(workdir.glob(f"*/{RECORD}")):
        try:
            stat = path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
            if cache.get(path, (None,))[0] != stamp:
                cache[path] = (stamp, json.loads(path.read_text("utf-8")))
        except (OSError, ValueError):
            continue  # being written; read again on the next poll
        doc = cache[path][1]
        steps[doc["name"]] = Step(doc["name"], doc["status"], doc.get("seconds"), doc)
    return steps


class Progress:
    """Prints one line when a step starts and one when it ends. Steps of an earlier run in the
    same folder (``--resume``) are not repeated unless they run again."""

    def __init__(self, workdir: Path, out=sys.stdout, names=lambda text: text) -> None:
        self.workdir = workdir
        self.out = out
        self.names = names  # the user's files for the run's copies in messages
        self._records: dict = {}  # step_records' cache: the poll reads only changed records
        self.seen = {name: self._key(s) for name, s in step_records(workdir).items()}
        self.earlier = set(self.seen)
        self.t0 = time.monotonic()

    @staticmethod
    def _key(step: Step) -> tuple:
        return step.record.get("started"), step.status

    def poll(self) -> None:
        for name, step in step_records(self.workdir, self._records).items():
            key = self._key(step)
            if self.seen.get(name) == key:
                continue
            if (self.seen.get(name) or (None,))[0] != key[0] and step.status != "running":
                self._line(name, "running", None)
            self.seen[name] = key
            self.earlier.discard(name)
            self._line(name, step.status, step.seconds)
            if step.status != "running":
                for message in step_warnings(Path(step.record["log"])):
                    print(f"{'':13}warning: {self.names(message)}", file=self.out, flush=True)

    def done_here(self, name: str) -> bool:
        """Whether step ``name`` ran in this run (not reused from an earlier one) and is done."""
        return self.seen.get(name, (None, None))[1] == "done" and name not in self.earlier

    def reused(self) -> list[str]:
        """Steps whose earlier result was reused (resumed runs)."""
        return sorted(self.earlier)

    def _line(self, name: str, status: str, seconds: float | None) -> None:
        took = "" if seconds is None else f"{seconds:7.1f} s"
        mark = {"running": "start", "done": "done", "failed": "FAILED"}.get(status, status)
        print(
            f"  [{time.monotonic() - self.t0:6.1f} s] {name:<16} {mark:<7}{took}",
            file=self.out,
            flush=True,
        )


#: a line of packtivity's run log under Docker: "<time> | pack.<step>.run | INFO | b'<line>'"
_PACKTIVITY_LINE = re.compile(r"^[\d-]+ [\d:,]+ \|[^|]*\|[^|]*\| b(['\"])(.*)\1$")


#: a warning a user must see: rootml's own (the CLI's log format) or a Python warning;
#: TensorFlow's C++ lines ("W0000 ...", "WARNING: All log messages ...") do not match
_WARNING_LINE = re.compile(r"^WARNING (rootml[\w.]*|py\.warnings): (.*)$")


def _log_lines(path: Path) -> list[str] | None:
    """A step's log as the step printed it (packtivity's Docker wrapping undone)."""
    try:
        text = path.read_text("utf-8", errors="replace").splitlines()
    except OSError:
        return None
    out = []
    for line in text:
        match = _PACKTIVITY_LINE.match(line)
        out.append(_unescape(match.group(2)) if match else line)
    return out


def _tail(path: Path, lines: int = LOG_TAIL) -> str:
    """The last lines of a step's log, as the step printed them."""
    text = _log_lines(path)
    return f"(no log at {path})" if text is None else "\n".join(text[-lines:])


def step_warnings(path: Path) -> list[str]:
    """The warnings in a step's log that belong on the console, each once."""
    found = (_WARNING_LINE.match(line) for line in _log_lines(path) or ())
    return list(dict.fromkeys(m.group(2) for m in found if m))


def _unescape(text: str) -> str:
    """The text of a bytes literal's repr (packtivity logs ``b'...'``)."""
    return text.encode("latin-1", "backslashreplace").decode("unicode_escape")


def failure_report(workdir: Path, yadage_log: Path) -> str:
    failed = [s for s in step_records(workdir).values() if s.status == "failed"]
    if not failed:
        return (
            f"yadage stopped before any step failed; the end of its log ({yadage_log}):\n"
            + _tail(yadage_log)
        )
    parts = []
    for step in failed:
        log = Path(step.record["log"])
        parts.append(
            f"step {step.name} failed ({step.record.get('error')}); the end of its log ({log}):\n"
            + _tail(log)
        )
    return "\n\n".join(parts)


# ------------------------------------------------------------------ the run


SOURCE_RECORD = "source.json"


def _prepare_input(
    options: RunOptions, root: Path, workdir: Path, url: str
) -> tuple[RunInput, docker.Engine]:
    """The run's init folder from the input; on --resume, from the input the run started with
    (recorded in source.json) unless another is given, which must not change the data
    settings: only model.py may change, and then training and what follows re-run."""
    record = workdir / SOURCE_RECORD
    if options.resume:
        if not record.is_file():
            raise WorkflowError(
                f"--resume: {workdir} holds no earlier run ({record} is missing); run "
                "without --resume first"
            )
        old = json.loads(record.read_text("utf-8"))
        source = {"input": options.input, "mlaas4hep": options.mlaas4hep}
        if not any(source.values()):
            source = {k: old.get(k) for k in source}
        name, jobs = options.name or old["name"], old["jobs"]
        engine = options.engine or old.get("engine")
        mlflow = options.mlflow or old.get("mlflow")
    else:
        source = {"input": options.input, "mlaas4hep": options.mlaas4hep}
        name, jobs, engine, mlflow = options.name, options.jobs, options.engine, options.mlflow
    if mlflow == "default":
        mlflow = tracking.default_uri(workdir)
    if source["mlaas4hep"]:
        doc, base = from_mlaas4hep(source["mlaas4hep"])
        where = Path(source["mlaas4hep"]).resolve()
    else:
        where = Path(source["input"] or "inputs/input.yml").resolve()
        doc, base = from_input_yml(where)
    run_input = prepare(
        doc,
        base,
        workdir,
        name=name,
        tfaas_url=url,
        jobs=jobs,
        where=where,
        resume=options.resume,
        checksums=list(options.checksums or ()) or None,
        mlflow=mlflow,
    )
    if mlflow and engine == "docker":
        raise WorkflowError(
            "--mlflow needs the local engine: the step images do not carry MLflow "
            "(rootml[mlflow]); run with --engine local"
        )
    chosen = docker.choose("local" if mlflow else engine or "auto", root, run_input)
    record.write_text(
        json.dumps(
            {
                "input": None if source["mlaas4hep"] else str(where),
                "mlaas4hep": str(where) if source["mlaas4hep"] else None,
                "name": run_input.params["name"],
                "jobs": jobs,
                "engine": chosen.name,
                "mlflow": mlflow,
            },
            indent=1,
        ),
        "utf-8",
    )
    return run_input, chosen


def _yadage_command(root: Path, workdir: Path, run_input: RunInput, parallel: int) -> list[str]:
    yadage_run = Path(sys.executable).with_name("yadage-run")
    if not yadage_run.exists():
        found = shutil.which("yadage-run")
        if not found:
            raise WorkflowError(
                "yadage-run is not installed beside rootml; pip install 'rootml[workflow]'"
            )
        yadage_run = Path(found)
    return [
        str(yadage_run),
        "-t",
        str(root),
        str(workdir),
        WORKFLOW,
        str(run_input.init_yml),
        "-d",
        f"initdir={run_input.initdir}",
        "--plugins",
        PLUGIN,
        "-b",
        f"multiproc:{parallel}",
        "-c",
        "checksums",
        "--accept-metadir",
        "--no-visualize",
        # prepublishing guesses every pending node's outputs on every poll (a jq pass over its
        # parameters each time): most of yadage's CPU, and nothing here needs the guesses
        "-o",
        "disable_prepub=true",
    ]


def run(options: RunOptions, out=sys.stdout) -> dict:
    """Run the workflow; returns the run record (also written to ``<workdir>/run.json``)."""
    root = spec_root()
    workdir = options.workdir.resolve()
    created = not workdir.exists()
    workdir.mkdir(parents=True, exist_ok=True)
    with workdir_lock(workdir):
        if not options.resume and any(p.name != LOCK for p in workdir.iterdir()):
            raise WorkflowError(
                f"{workdir} is not empty: pass --resume to continue the run there, or choose a "
                "new --workdir"
            )
        return _start(options, root, workdir, created, out)


def _start(options: RunOptions, root: Path, workdir: Path, created: bool, out) -> dict:
    prepared = False
    try:
        # the warm interpreters and the server start first: their imports overlap the rest
        with _warm(options, workdir) as pool, _server(options, workdir, pool) as server:
            run_input, engine = _prepare_input(options, root, workdir, server.url)
            prepared = True
            if engine.name == "local":
                return _run(options, root, workdir, run_input, engine, server, pool, out)
            pool.close()
            with _warm_containers(options, workdir, engine) as containers:
                return _run(options, root, workdir, run_input, engine, server, containers, out)
    finally:
        if not prepared and (created or not options.resume):
            # bad input: leave nothing behind that looks like a run (neither a new run nor
            # --resume would take a half-made folder); an earlier run's folder stays as it was
            _clear(workdir, created)


def _clear(workdir: Path, created: bool) -> None:
    if created:
        shutil.rmtree(workdir, ignore_errors=True)
        return
    for path in workdir.iterdir():
        if path.name == LOCK:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _run(
    options: RunOptions, root: Path, workdir: Path, run_input, engine, server, pool, out
) -> dict:
    """The yadage run proper, with the server up, starting or to be started."""
    parallel = options.parallel or os.cpu_count() or 1
    env = {**os.environ, "ROOTML_ENGINE": engine.name, **engine.env, **pool.env}
    url = server.url
    print(
        f"rootml run: {len(run_input.files)} file(s), engine {engine.name}, "
        f"{parallel} parallel steps, workdir {workdir}\n  publishing to {url}",
        file=out,
        flush=True,
    )
    yadage_log = workdir / "yadage.log"
    cmd = _yadage_command(root, workdir, run_input, parallel)
    progress = Progress(workdir, out, run_input.user_paths)
    # the summary reads an event with uproot and the manifest lists this interpreter's
    # packages: do both while this process only waits, once nothing on the way to the bundle
    # needs the CPU
    reading = threading.Thread(target=_prepare_summary, daemon=True)
    t0 = time.time()
    with open(yadage_log, "ab") as log:
        proc = subprocess.Popen(
            cmd, cwd=root, env=env | processes.mark(), stdout=log, stderr=subprocess.STDOUT
        )
        if pool.env:
            # yadage's bookkeeping must not slow the model server's import (TensorFlow), which
            # training waits for: on a 2-core machine they share a core otherwise
            _lower_priority(proc.pid)
        preloaded = False
        early = _EarlySummary(workdir, run_input, server, keep_serving=options.serve)
        model_check = _ModelCheck(workdir)
        try:
            while proc.poll() is None:
                progress.poll()
                if model_check.poll(progress):
                    # the model cannot train: stop now, once yadage has entered the steps
                    # that are done in its cache (--resume reuses them)
                    _await_cache(workdir, proc)
                    processes.end_workflow(proc)
                    break
                if not preloaded and progress.seen.keys() & {"train", "features"}:
                    # the data path is done: evaluation's imports next
                    pool.preload(pool.roles["evaluate"])
                    preloaded = True
                if pool.settled(pool.roles["model"]) or "evaluate" in progress.seen:
                    server.start()  # TensorFlow's import, which training waits for, is done
                if "evaluate" in progress.seen and reading.ident is None:
                    reading.start()
                early.poll(progress)
                server.check()
                time.sleep(0.05)
        except BaseException:
            processes.end_workflow(proc)
            raise
        processes.end_workflow(proc)  # a step yadage started as it ended (it left it running)
    progress.poll()
    if progress.reused():
        print(f"  reused from the earlier run: {', '.join(progress.reused())}", file=out)
    if proc.returncode != 0:
        model_check.poll(progress)  # train may have failed on the same model file: say it once
    record = _run_record(workdir, run_input, engine, url, cmd, t0, proc.returncode)
    if model_check.error:
        raise WorkflowError(
            f"{run_input.user_paths(model_check.error)}\nfix the model file, then continue "
            f"with: rootml run --resume --workdir {workdir} (model.py may change on --resume)"
        )
    if proc.returncode != 0:
        raise WorkflowError(
            "the workflow failed.\n"
            + run_input.user_paths(failure_report(workdir, yadage_log))
            + f"\nfix the cause, then continue with: rootml run --resume --workdir {workdir}"
            + (
                "\n(--resume keeps the run's data settings: if the fix changes files.txt, "
                "labels, params.json or input.yml, start a new run with another --workdir; "
                "model.py may change)"
            )
        )
    record["summary"] = early.result()
    _write_record(workdir, record)
    manifest = provenance.build(workdir, record, root, engine)
    with atomic_path(workdir / provenance.MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1), "utf-8")
    _print_summary(record["summary"], out)
    if options.serve:
        print(f"serving {url} until interrupted (Ctrl-C)", file=out, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return record


class _ModelCheck:
    """Watches the steps that check model.py (steps/steps.yml): ``model_probe`` (imported
    and ``model(8)`` tried as the run starts) and ``model_check`` (``model(idim)`` built and
    checked, as the train step will, as soon as merge has written the layout, beside
    preprocessing). When one fails the run stops at once (yadage is ended: the data path need
    not finish) with the check's own message, said once even when training failed on the same
    file meanwhile."""

    STEPS = ("model_probe", "model_check")

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.error = ""

    def poll(self, progress: Progress) -> bool:
        """True once a check has failed in this run (its message is in :attr:`error`)."""
        failed = None if self.error else self._failed(progress)
        if failed is None:
            return False
        self.error = self._message(failed)
        return True

    def _failed(self, progress: Progress) -> str | None:
        for step in self.STEPS:
            status = progress.seen.get(step, (None, None))[1]
            if status == "failed" and step not in progress.earlier:
                return step
        return None

    def _message(self, step: str) -> str:
        steps = step_records(self.workdir)
        log_path = Path(steps[step].record["log"]) if step in steps else None
        lines = (_log_lines(log_path) or []) if log_path else []
        mark = next((i for i, line in enumerate(lines) if ": error: " in line), None)
        if mark is None:
            return f"checking model.py failed; the end of {log_path}:\n" + "\n".join(
                lines[-LOG_TAIL:]
            )
        first = lines[mark].split(": error: ", 1)[1]
        return "model.py cannot be trained: " + "\n".join([first, *lines[mark + 1 :]])


def _prepare_summary() -> None:
    importlib.import_module("..reading", __package__)
    provenance.local_environment()


class _EarlySummary:
    """The run's :func:`summary` (with one prediction of the served model), computed in a
    thread once this run's publish and track steps are done, while yadage runs the provenance
    step and exits; the embedded server is then asked to stop, unless ``keep_serving``."""

    def __init__(self, workdir: Path, run_input: RunInput, server, *, keep_serving: bool):
        self.args = (workdir, run_input, server, keep_serving)
        self.thread: threading.Thread | None = None
        self.outcome: dict = {}

    def poll(self, progress: Progress) -> None:
        if self.thread is None and all(progress.done_here(s) for s in ("publish", "track")):
            self.thread = threading.Thread(target=self._compute, name="summary", daemon=True)
            self.thread.start()

    def _compute(self) -> None:
        try:
            self.outcome["summary"] = self._summary()
        except BaseException as err:  # noqa: BLE001 (raised again by result())
            self.outcome["error"] = err

    def _summary(self) -> dict:
        workdir, run_input, server, keep_serving = self.args
        server.wait()
        done = summary(workdir, run_input, server.url)
        if not keep_serving:
            server.terminate()
        return done

    def result(self) -> dict:
        """The summary (computed now if the workflow never got to start it, e.g. a resumed
        run that re-ran nothing); an error of the thread is raised here."""
        if self.thread is None:
            return self._summary()
        self.thread.join()
        if "error" in self.outcome:
            raise self.outcome["error"]
        return self.outcome["summary"]


def _await_cache(workdir: Path, proc: subprocess.Popen, timeout: float = 3.0) -> None:
    """Wait (at most ``timeout`` seconds) until yadage's cache holds every step whose record
    says done: yadage enters a finished step on its next pass over the graph, and a step it
    was stopped before entering runs again on --resume."""
    deadline = time.monotonic() + timeout
    cache_json = workdir / "_yadage" / "cache.json"
    while proc.poll() is None and time.monotonic() < deadline:
        done = {n for n, step in step_records(workdir).items() if step.status == "done"}
        try:  # yadage rewrites it in place: a read may catch it half-written
            entries = json.loads(cache_json.read_text("utf-8")).values()
            cached = {e["task"]["metadata"]["name"] for e in entries if "result" in e}
        except (OSError, ValueError, KeyError, TypeError):
            cached = set()
        if done <= cached:
            return
        time.sleep(0.05)


def _lower_priority(pid: int, increment: int = YADAGE_NICE) -> None:
    """Renice process ``pid`` (its later children inherit it); where not allowed, leave it."""
    with suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, pid, os.getpriority(os.PRIO_PROCESS, pid) + increment)


@contextmanager
def workdir_lock(workdir: Path) -> Iterator[None]:
    """Hold ``WORKDIR/.rootml.lock`` for the block: a second ``rootml run`` on the folder is
    refused, naming the holder. The lock is the kernel's (flock): it goes with its process, so
    a run that was killed leaves no stale lock behind (the file stays, with its last holder)."""
    path = workdir / LOCK
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held for the whole block)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "a process that has not written its pid yet"
            raise WorkflowError(
                f"{workdir} is in use by another rootml run ({holder}): wait for it to end or "
                "stop it, or choose another --workdir"
            ) from None
        started = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime())
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}, started {started}\n")
        handle.flush()
        yield
    finally:
        handle.close()  # releases the lock


@contextmanager
def _warm(options: RunOptions, workdir: Path) -> Iterator[warm.Pool]:
    """The warm interpreters (:mod:`.warm`) when the run may use the local engine."""
    if not options.warm or options.engine == "docker":
        yield warm.Pool.none()
        return
    with warm.servers(workdir / "warm.log") as pool:
        yield pool


@contextmanager
def _warm_containers(options: RunOptions, workdir: Path, engine) -> Iterator[warm.Pool]:
    """The warm containers (:mod:`.warmdocker`) of a Docker run, unless --no-warm."""
    if not options.warm:
        yield warm.Pool.none()
        return
    step_flags = engine.env.get("PACKTIVITY_DOCKER_CMD_MOD", "")
    with warmdocker.containers(
        workdir / "warm.log", list(engine.images), workdir, step_flags
    ) as pool:
        yield pool


class _GivenServer:
    """A TFaaS server the user named: nothing to start, wait for or stop."""

    def __init__(self, url: str) -> None:
        self.url = url

    def check(self) -> None:
        pass

    def wait(self) -> None:
        pass

    def start(self) -> None:
        pass

    def terminate(self) -> None:
        pass


@contextmanager
def _server(
    options: RunOptions, workdir: Path, pool: warm.Pool
) -> Iterator[EmbeddedServer | _GivenServer]:
    """The TFaaS server: --url, else input.yml's publish.url, else the embedded one. That one
    starts at once without warm interpreters; with them, once TensorFlow's import is done
    (the run starts it), and no step waits for it before publish. Its start-up then overlaps
    training, so it runs at the data server's lower priority, unless it is to go on serving
    after the run (--serve)."""
    url = options.url or _configured_url(options, workdir)
    if url:
        yield _GivenServer(url)
        return
    folder = workdir / "server"
    folder.mkdir(exist_ok=True)
    server = EmbeddedServer(
        ServerConfig(models=folder / "models", port=_server_port(folder)),
        folder / "server.log",
        nice=warm.NICE["data"] if pool.env and not options.serve else 0,
    )
    if pool.settled("model"):
        server.start()
    try:
        yield server
    finally:
        server.stop()


def _configured_url(options: RunOptions, workdir: Path) -> str | None:
    stored = workdir / "init" / "input.yml"
    if options.resume and not (options.input or options.mlaas4hep):
        if not stored.is_file():
            return None  # no earlier run: preparing the input says so
        doc = load_yaml(stored)
    elif options.mlaas4hep:
        return None  # MLaaS4HEP's files name no server
    else:
        doc = load_yaml(Path(options.input or "inputs/input.yml"))
    return (doc.get("publish") or {}).get("url") or None


def _run_record(workdir, run_input, engine, url, cmd, t0, returncode) -> dict:
    steps = step_records(workdir)
    record = {
        "workdir": str(workdir),
        "engine": engine.name,
        "tfaas_url": url,
        "parameters": run_input.params,
        "command": cmd,
        "started": t0,
        "seconds": round(time.time() - t0, 3),
        "returncode": returncode,
        "steps": {name: s.record for name, s in steps.items()},
    }
    _write_record(workdir, record)
    return record


def _write_record(workdir: Path, record: dict) -> None:
    with atomic_path(workdir / RUN_RECORD) as tmp:
        tmp.write_text(json.dumps(record, indent=1, default=str), "utf-8")


def summary(workdir: Path, run_input: RunInput, url: str) -> dict:
    """What a good run produced, and one prediction from the served model."""
    outputs = {
        "bundle": workdir / "train" / "bundle",
        "report": workdir / "evaluate" / "report" / "report.html",
        "metrics": workdir / "evaluate" / "report" / "metrics.json",
        "receipt": workdir / "publish" / "receipt.json",
    }
    missing = [str(p) for p in outputs.values() if not p.exists()]
    if missing:
        raise WorkflowError(f"the workflow ended without its outputs: {missing}")
    metrics = json.loads(outputs["metrics"].read_text("utf-8"))
    tracked = workdir / "track" / "tracking.json"
    tracked = json.loads(tracked.read_text("utf-8")) if tracked.is_file() else {}
    receipt = json.loads(outputs["receipt"].read_text("utf-8"))
    return {
        **{k: str(v) for k, v in outputs.items()},
        "auc": metrics.get("auc"),
        "auc_macro": metrics.get("auc_macro"),
        "accuracy": metrics.get("accuracy"),
        "n_test": metrics.get("n_test"),
        "model": receipt.get("name"),
        "served": served_example(url, receipt.get("name"), outputs["bundle"], run_input),
        "mlflow": tracked if tracked.get("tracked") else None,
    }


def served_example(url: str, name: str, bundle: Path, run_input: RunInput) -> dict:
    """The first event of the first input file, as raw branch values, scored by the server."""
    from ..bundle import load_bundle
    from ..client import Client

    layout = load_bundle(bundle).layout
    event = first_event(run_input, layout)
    reply = Client(url, timeout=30).json("POST", "/json", {"model": name, "event": event})
    return {"file": run_input.files[0], "entry": 0, "scores": reply}


def first_event(run_input: RunInput, layout: dict) -> dict:
    """Event 0 of the first input file: the branches the layout reads, label excepted."""
    from ..reading import open_input
    from ..sources import resolve

    source = resolve(run_input.files[0], redirector=run_input.settings.redirector)
    tree = open_input(
        source,
        layout["tree"],
        preprocessing=layout.get("preprocessing"),
        file_format=layout["files"][0].get("format"),
    )
    label = layout["labels"].get("branch")
    return tree.arrays([b for b in layout["read"] if b != label], 0, 1).to_list()[0]


def _print_summary(s: dict, out) -> None:
    if s["auc"] is not None:
        auc = f"AUC {s['auc']:.3f}"
    elif s.get("auc_macro") is not None:  # several classes: one-vs-rest, averaged
        auc = f"AUC {s['auc_macro']:.3f} (macro, one class against the rest)"
    else:
        auc = "AUC n/a"
    print(
        f"test {auc}, accuracy {s['accuracy']:.3f} on {s['n_test']:,} held-out events\n"
        f"bundle:  {s['bundle']}\nreport:  {s['report']}\nreceipt: {s['receipt']}\n"
        f"served model {s['model']}: event 0 of {Path(s['served']['file']).name} -> "
        f"{json.dumps(s['served']['scores'])}"
        + (
            f"\nMLflow run {s['mlflow']['run_id']} in {s['mlflow']['uri']}"
            if s.get("mlflow")
            else ""
        ),
        file=out,
        flush=True,
    )

"""The warm interpreters of the local engine: a command handed to one behaves as a fresh
``python -m rootml`` would (output, exit status, folder, environment), a launcher without a
server starts cold, and a killed or signalled launcher takes its command with it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from servers import free_port

from rootml.workflow import warm

COLD = [sys.executable, "-m", "rootml"]


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    with warm.servers(tmp_path_factory.mktemp("warm") / "warm.log", kinds=("data",)) as p:
        yield p


def _launcher(pool) -> str:
    return str(Path(pool.env["ROOTML_WARM_BIN"]) / "rootml")


def _env(pool, **extra) -> dict[str, str]:
    return {**os.environ, **pool.env, **extra}


def _run(argv, env, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--version"],
        ["check", "--input", "missing.yml", "--out", "inputs.json"],
        ["merge", "nothing.json", "--out", "layout.json"],
    ],
)
def test_launcher_answers_as_a_fresh_interpreter(pool, tmp_path, args):
    cold = _run([*COLD, *args], os.environ, tmp_path)
    hot = _run([_launcher(pool), *args], _env(pool), tmp_path)
    assert (hot.returncode, hot.stdout, hot.stderr) == (cold.returncode, cold.stdout, cold.stderr)
    assert cold.returncode == 0 or "error" in cold.stderr


def test_launcher_runs_in_its_folder_with_its_environment(pool, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    record = tmp_path / "env.json"
    done = _run(
        [_launcher(pool), "sample", "--out", "rel", "--events", "400"],
        _env(pool, ROOTML_STEP_ENV=str(record)),
        work,
    )
    assert done.returncode == 0, done.stderr
    assert (work / "rel" / "signal.root").stat().st_size > 0
    env = json.loads(record.read_text())
    assert env["interpreter"] == sys.executable
    assert "uproot" in env["packages"]


def test_launcher_without_a_server_starts_cold(tmp_path):
    with warm.servers(tmp_path / "warm.log", kinds=("data",)) as p:
        launcher = _launcher(p)
        env = _env(p, ROOTML_WARM=str(tmp_path))  # a folder with no server socket
        done = _run([launcher, "check", "--input", "missing.yml", "--out", "x"], env, tmp_path)
    assert done.returncode == 1
    assert "missing.yml" in done.stderr


def _serve(pool, tmp_path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    argv = [_launcher(pool), "-q", "serve", "--models", str(tmp_path / "models")]
    proc = subprocess.Popen(
        [*argv, "--host", "127.0.0.1", "--port", str(port)],
        env=_env(pool),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v2/health/live"
    deadline = time.monotonic() + 60
    while not _answers(url):
        assert proc.poll() is None, "serve exited at start"
        assert time.monotonic() < deadline, "serve did not answer in 60 s"
        time.sleep(0.1)
    return proc, url


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:
        return False


def _gone(url: str, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _answers(url):
            return True
        time.sleep(0.1)
    return False


def test_signal_to_the_launcher_reaches_its_command(pool, tmp_path):
    proc, url = _serve(pool, tmp_path)
    proc.send_signal(signal.SIGTERM)
    # a cold `rootml serve` ends the same way: uvicorn drains, then re-raises the signal
    assert proc.wait(30) == 128 + signal.SIGTERM
    assert _gone(url)


def test_killed_launcher_ends_its_command(pool, tmp_path):
    proc, url = _serve(pool, tmp_path)
    proc.kill()  # SIGKILL cannot be passed on: the server sees the launcher's socket close
    proc.wait(10)
    assert _gone(url), "the command outlived its killed launcher"


def test_packages_refused_while_loading_are_importable_afterwards():
    """Keras's optional scikit-learn/matplotlib imports are refused only while the preload
    runs: a model file (or the report) importing them in a warm child still gets them."""
    code = (
        "import importlib\n"
        "from rootml.workflow import warm\n"
        "with warm._refusing():\n"
        "    try:\n"
        "        import matplotlib\n"
        "    except ImportError as err:\n"
        "        print('refused', err.name)\n"
        "print('after', importlib.import_module('matplotlib.figure').__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.splitlines() == [
        "refused matplotlib",
        "after matplotlib.figure",
    ]


def _loaded(pid: int, fragment: str) -> bool:
    return fragment in Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/PID/maps")
def test_preload_imports_the_evaluation_stack_into_the_data_server(tmp_path):
    with warm.servers(tmp_path / "warm.log", kinds=("data",)) as pool:
        pid = pool.procs["data"].pid
        deadline = time.monotonic() + 60
        while not pool.settled("data") and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        assert not _loaded(pid, "ft2font"), "matplotlib is imported before it is asked for"
        pool.preload("data")
        while not _loaded(pid, "ft2font") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _loaded(pid, "ft2font")

"""The yadage workflow: its spec, the packtivity plugin, and real ``rootml run`` end to end.

The end-to-end runs are real: yadage-run with rootml's plugin (local processes), a real
``rootml serve`` on 127.0.0.1 started by ``rootml run``, ROOT files written here with uproot.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from rootfiles import event_arrays, write_events

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ROOTML = str(BIN / "rootml")
STEPS = yaml.safe_load((ROOT / "steps" / "steps.yml").read_text())
WORKFLOW = yaml.safe_load((ROOT / "workflows" / "main.yml").read_text())
STEP_NAMES = [name for name, node in STEPS.items() if "process" in node]  # not the anchors
IDS = ["run", "event", "luminosityBlock"]


# ------------------------------------------------------------------ the spec


def test_workflow_validates_with_yadage():
    result = subprocess.run(
        [str(BIN / "yadage-validate"), "workflows/main.yml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "validates against schema" in result.stdout + result.stderr


@pytest.mark.parametrize("step", STEP_NAMES)
def test_every_step_validates_with_packtivity(step):
    result = subprocess.run(
        [str(BIN / "packtivity-validate"), f"steps/steps.yml#/{step}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout + result.stderr


def _stage_parameters(stage: dict) -> set[str]:
    return {p["key"] for p in stage["scheduler"]["parameters"]}


@pytest.mark.parametrize("stage", WORKFLOW["stages"], ids=lambda s: s["name"])
def test_stage_gives_every_placeholder_its_step_uses(stage):
    """A `{name}` the step's script formats must be a parameter of its stage, and every
    stage parameter must be used (yadage would raise KeyError at run time, or pass a value
    nobody reads)."""
    step = STEPS[stage["scheduler"]["step"]["$ref"].rsplit("/", 1)[-1]]
    text = step["process"]["script"] + json.dumps(step["publisher"])
    # single braces only: {{ }} is a literal brace for the shell
    used = set(re.findall(r"(?<!\{)\{([a-z_0-9]+)\}(?!\})", text))
    given_ = _stage_parameters(stage)
    assert used <= given_, f"{stage['name']}: the step uses {used - given_}, not given"
    assert given_ <= used, f"{stage['name']}: parameters {given_ - used} are never used"


def test_steps_call_only_the_rootml_cli_and_check_their_outputs():
    for name in STEP_NAMES:
        process = STEPS[name]["process"]
        assert process["interpreter"] == "bash -euo pipefail", name  # the shared &step_script
        script = process["script"]
        first = "export ROOTML_STEP_ENV='{outdir}/_rootml/environment.json'"
        assert script.splitlines()[0] == first, f"{name} does not record its environment first"
        commands = [
            line.split()[0]
            for line in script.splitlines()
            if line.strip() and not line.startswith((" ", "#")) and "=" not in line.split()[0]
        ]
        tools = set(commands) - {"set", "test", "ls", "if", "fi", "echo", "export"}
        assert tools == {"rootml"}, f"{name} calls {tools}"
        last = [line for line in script.splitlines() if line.strip()][-1]
        assert last.startswith(("test -s", "ls ")), f"{name} does not end by checking its output"


def test_scatter_stages_scatter_over_lists_from_upstream():
    """fetch and specs are pipelined per file; preprocess scatters over merge's batches."""
    stages = {s["name"]: s["scheduler"] for s in WORKFLOW["stages"]}
    assert [s["name"] for s in WORKFLOW["stages"]] == [
        "check",
        "model_probe",
        "fetch",
        "specs",
        "merge",
        "model_check",  # before preprocess: yadage submits it first, ahead of the data jobs
        "preprocess",
        "train",
        "features",
        "evaluate",
        "publish",
        "track",
        "provenance",
    ]
    for name in ("fetch", "specs", "preprocess"):
        assert stages[name]["scheduler_type"] == "multistep-stage"
    assert stages["fetch"]["scatter"]["parameters"] == ["files", "checksums"]
    assert stages["specs"]["scatter"]["parameters"] == ["record"]
    assert stages["preprocess"]["scatter"]["parameters"] == ["batch"]
    single = ("check", "model_probe", "merge", "train", "model_check", "features", "evaluate")
    for name in (*single, "publish", "track"):
        assert stages[name]["scheduler_type"] == "singlestep-stage"
    assert stages["provenance"]["scheduler_type"] == "singlestep-stage"


# ------------------------------------------------------------------ inputs to runs


def _events_with_label(path: Path, n: int, seed: int) -> Path:
    met = event_arrays(n, seed)["MET"]
    return write_events(path, n, seed, isSignal=(met > np.median(met)).astype(np.int32))


def _mlaas4hep_folder(folder: Path, n: int = 400) -> Path:
    """Three files, MLaaS4HEP's four inputs, written as its users have them."""
    data = folder / "data"
    write_events(data / "sig.root", n, 1, signal=True)
    write_events(data / "bkg_a.root", n, 2)
    write_events(data / "bkg_b.root", n, 3)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "files.txt").write_text("data/sig.root\ndata/bkg_a.root\ndata/bkg_b.root\n")
    (folder / "labels.txt").write_text("1\n0\n0\n")
    params = {
        "nevts": -1,
        "shuffle": True,
        "chunk_size": 250,
        "epochs": 10,  # 1,200 weakly separable events: enough steps to learn from them
        "batch_size": 16,
        "identifier": "run,event,luminosityBlock",
        "branch": "events",
        "selected_branches": "",
        "exclude_branches": "",
        "redirector": "root://cms-xrd-global.cern.ch",
        "verbose": 1,
    }
    (folder / "params.json").write_text(json.dumps(params))
    shutil.copyfile(ROOT / "inputs" / "model.py", folder / "model.py")
    return folder


def _one_file_input(folder: Path, model: str | None = None) -> Path:
    _events_with_label(folder / "mixed.root", 800, 5)
    doc = {
        "files": ["mixed.root"],
        "labels": {"branch": "isSignal"},
        "tree": "events",
        "seed": 3,
        "data": {"chunk_size": 300},
        "features": {"identifiers": IDS},
        "training": {"epochs": 2, "batch_size": 64},
        "publish": {"name": "one_file"},
    }
    if model is not None:
        (folder / "model.py").write_text(model)
        doc["model"] = "model.py"
    (folder / "input.yml").write_text(yaml.safe_dump(doc))
    return folder / "input.yml"


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [ROOTML, "run", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )


def _steps(workdir: Path) -> dict[str, dict]:
    return json.loads((workdir / "run.json").read_text())["steps"]


# ------------------------------------------------------------------ bad input, no TensorFlow


def test_run_refuses_an_empty_file_list(tmp_path):
    (tmp_path / "files.txt").write_text("# nothing yet\n")
    (tmp_path / "labels.txt").write_text("")
    result = _run(
        "--mlaas4hep",
        str(tmp_path),
        "--engine",
        "local",
        "--workdir",
        str(tmp_path / "w"),
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "file list is empty" in result.stderr
    assert "files.txt" in result.stderr
    assert not (tmp_path / "w" / "_yadage").exists()  # yadage never started


def test_workflow_itself_fails_on_an_empty_file_list(tmp_path):
    """Run by yadage directly (as REANA does), an empty list fails at the check step instead
    of "succeeding" with no steps."""
    inputs = tmp_path / "inputs"
    _one_file_input(inputs)
    init = tmp_path / "init.yml"
    init.write_text(
        yaml.safe_dump(
            {
                "input": str(inputs / "input.yml"),
                "files": [],
                "checksums": [],
                "model": "none",
                "model_sha256": "none",
                "name": "x",
                "tfaas_url": "env",
                "jobs": 2,
            }
        )
    )
    result = subprocess.run(
        [
            str(BIN / "yadage-run"),
            "-t",
            str(ROOT),
            str(tmp_path / "w"),
            "workflows/main.yml",
            str(init),
            "--plugins",
            "rootml.workflow.plugin",
            "-b",
            "multiproc:2",
            "--no-visualize",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=dict(os.environ, ROOTML_ENGINE="local"),
        timeout=300,
        check=False,
    )
    assert result.returncode != 0
    log = (tmp_path / "w" / "check" / "_packtivity" / "check.run.log").read_text()
    assert "empty file list" in log
    assert not list((tmp_path / "w").glob("fetch_*"))


def test_run_names_a_missing_model_file(tmp_path):
    inputs = _one_file_input(tmp_path / "in")
    doc = yaml.safe_load(inputs.read_text())
    doc["model"] = "nope.py"
    inputs.write_text(yaml.safe_dump(doc))
    result = _run(
        "--input", str(inputs), "--engine", "local", "--workdir", str(tmp_path / "w"), cwd=tmp_path
    )
    assert result.returncode == 1
    assert "nope.py" in result.stderr
    assert "does not exist" in result.stderr
    assert not (tmp_path / "w").exists()  # no run folder left behind


def test_resume_needs_an_earlier_run(tmp_path):
    result = _run("--resume", "--workdir", str(tmp_path / "w"), cwd=tmp_path)
    assert result.returncode == 1
    assert "holds no earlier run" in result.stderr
    assert not (tmp_path / "w").exists()  # the folder it made for the lock is gone again


_HOLD_LOCK = """
import sys, time
from pathlib import Path
from rootml.workflow.run import workdir_lock
with workdir_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_a_workdir_is_locked_by_its_run_and_a_dead_holder_frees_it(tmp_path):
    workdir = tmp_path / "w"
    workdir.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(workdir)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = _run("--resume", "--workdir", str(workdir), cwd=tmp_path)
        assert result.returncode == 1
        assert "in use by another rootml run" in result.stderr
        assert f"pid {holder.pid}" in result.stderr
        assert "started" in result.stderr
    finally:
        holder.kill()  # as kill -9 would: no clean-up of its own
        holder.wait()
        holder.stdout.close()
    # the dead holder's lock is gone with it: the run goes on (and finds no earlier run)
    result = _run("--resume", "--workdir", str(workdir), cwd=tmp_path)
    assert result.returncode == 1
    assert "holds no earlier run" in result.stderr
    assert "in use" not in result.stderr


def test_a_params_json_not_in_utf8_is_one_message_and_leaves_no_run_folder(tmp_path):
    folder = _mlaas4hep_folder(tmp_path / "m")
    params = folder / "params.json"
    params.write_bytes(params.read_bytes().replace(b'"epochs"', b'"epochs\xe9"'))
    for workdir in (tmp_path / "new", tmp_path / "empty"):
        if workdir.name == "empty":
            workdir.mkdir()
        result = _run("--mlaas4hep", str(folder), "--workdir", str(workdir), cwd=tmp_path)
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        assert str(params) in result.stderr
        assert "not UTF-8" in result.stderr
        assert "byte 0xe9 on line" in result.stderr
        assert "init/params.json" not in result.stderr  # the user's file, not the run's copy
        assert "save the file as UTF-8" in result.stderr
        # nothing half-made: the same command works once the file is fixed
        assert not workdir.exists() or [p.name for p in workdir.iterdir()] == [".rootml.lock"]


def test_bad_input_files_and_a_model_that_does_not_compile_are_said_before_any_step(tmp_path):
    inputs = _one_file_input(tmp_path / "in")
    doc = yaml.safe_load(inputs.read_text())
    (tmp_path / "in" / "folder").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("not a ROOT file\n")
    cases = [
        ({"files": ["gone.root"]}, ["gone.root", "does not exist"]),
        ({"files": ["folder"]}, ["folder is a folder", "list the ROOT files in it"]),
        ({"files": ["notes.txt"]}, ["notes.txt is not a ROOT file", "b'not '"]),
        ({"files": []}, ["'files'", "should be non-empty"]),
        ({"model": "bad.py"}, ["syntax error in the model file at line 2", "bad.py"]),
        ({"model": "nomodel.py"}, ["must define a function model(idim)", "found: net"]),
        ({"model": "noarg.py"}, ["model() at line 3 must take the input width", "noarg.py"]),
        ({"model": "noreturn.py"}, ["model(idim) at line 3 returns nothing", "'return model'"]),
    ]
    (tmp_path / "in" / "bad.py").write_text("def model(idim):\n    return (\n")
    (tmp_path / "in" / "nomodel.py").write_text("import keras\n\ndef net(idim):\n    pass\n")
    (tmp_path / "in" / "noarg.py").write_text("import keras\n\ndef model():\n    pass\n")
    (tmp_path / "in" / "noreturn.py").write_text(
        "import keras\n\ndef model(idim):\n    def inner():\n        return 1\n"
        "    net = keras.Sequential()\n    return\n"
    )
    for change, messages in cases:
        bad = tmp_path / "in" / "bad.yml"
        bad.write_text(yaml.safe_dump({**doc, **change}))
        workdir = tmp_path / "w"
        result = _run(
            "--input", str(bad), "--engine", "local", "--workdir", str(workdir), cwd=tmp_path
        )
        assert result.returncode == 1, change
        assert "Traceback" not in result.stderr
        for message in messages:
            assert message in result.stderr, (change, result.stderr)
        assert "rootml run:" not in result.stdout  # said before the workflow started
        assert not workdir.exists()


def test_run_refuses_a_used_workdir_without_resume(tmp_path):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "something").write_text("x")
    result = _run(
        "--input",
        str(ROOT / "inputs" / "input.yml"),
        "--workdir",
        str(tmp_path / "w"),
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "not empty" in result.stderr
    assert "--resume" in result.stderr


# ------------------------------------------------------------------ end to end (trains)


def _assert_good_run(result, workdir: Path, n_files: int) -> dict:
    assert result.returncode == 0, result.stdout + result.stderr
    steps = _steps(workdir)
    for stage in ("fetch", "specs"):
        assert sorted(n for n in steps if n.startswith(stage + "_")) == [
            f"{stage}_{i}" for i in range(n_files)
        ]
    assert {s["status"] for s in steps.values()} == {"done"}
    assert {s["engine"] for s in steps.values()} == {"local"}
    # each file was decompressed once: specs staged its columns, preprocess read those
    for i in range(n_files):
        assert (workdir / f"specs_{i}" / "columns" / "columns.json").is_file()
    for name in (n for n in steps if n.startswith("preprocess_")):
        log = (workdir / name / "_packtivity" / f"{name}.run.log").read_text()
        assert "read from the columns staged in" in log
        assert ".root read from /" not in log
    summary = json.loads((workdir / "run.json").read_text())["summary"]
    assert 0.5 < summary["auc"] <= 1.0
    assert (workdir / "train" / "bundle" / "model.onnx").is_file()
    assert (workdir / "evaluate" / "report" / "report.html").is_file()
    receipt = json.loads((workdir / "publish" / "receipt.json").read_text())
    assert receipt["name"] == summary["model"]
    assert len(summary["served"]["scores"]) == 1  # one event scored by the served model
    # the workflow's own manifest (what a REANA run keeps) agrees with rootml run's
    in_step = json.loads((workdir / "provenance" / "provenance.json").read_text())
    full = json.loads((workdir / "provenance.json").read_text())
    assert in_step["outputs"] == full["outputs"]
    assert in_step["inputs"] == full["inputs"]
    assert in_step["steps"].keys() == full["steps"].keys()
    assert in_step["steps"]["provenance"]["status"] == "running"  # it wrote the manifest
    # every step recorded the environment it ran in (what a REANA run has instead of images)
    assert {f"step {name}" for name in steps} <= set(in_step["environments"])
    assert "numpy" in in_step["environments"]["step preprocess_0"]["packages"]
    assert "test AUC" in result.stdout
    assert "served model" in result.stdout
    for name in steps:
        assert f"] {name} " in result.stdout.replace("  ", " ") or name in result.stdout
    return summary


@pytest.mark.tensorflow
@pytest.mark.slow
def test_run_one_file_with_labels_from_a_branch(tmp_path):
    inputs = _one_file_input(tmp_path / "in")
    workdir = tmp_path / "w"
    result = _run(
        "--input", str(inputs), "--engine", "local", "--workdir", str(workdir), cwd=tmp_path
    )
    summary = _assert_good_run(result, workdir, 1)
    assert summary["model"] == "one_file"
    layout = json.loads((workdir / "merge" / "layout.json").read_text())
    assert layout["labels"]["branch"] == "isSignal"
    batches = yaml.safe_load((workdir / "merge" / "batches.yml").read_text())["batches"]
    assert len(list(workdir.glob("preprocess_*"))) == len(batches)


@pytest.mark.tensorflow
@pytest.mark.slow
def test_run_three_files_from_an_mlaas4hep_folder(tmp_path):
    folder = _mlaas4hep_folder(tmp_path / "mlaas4hep")
    workdir = tmp_path / "w"
    result = _run(
        "--mlaas4hep",
        str(folder),
        "--engine",
        "local",
        "--jobs",
        "3",
        "--workdir",
        str(workdir),
        cwd=tmp_path,
    )
    _assert_good_run(result, workdir, 3)
    layout = json.loads((workdir / "merge" / "layout.json").read_text())
    assert [f["basename"] for f in layout["files"]] == ["sig.root", "bkg_a.root", "bkg_b.root"]
    history = json.loads((workdir / "train" / "bundle" / "history.json").read_text())
    assert len(history["loss"]) == 10  # params.json's epochs, unchanged


# a compiled model with a fixed input width: built by the probe, refused with the layout's width
FIXED_WIDTH_MODEL = (
    "import keras\n\ndef model(idim):\n"
    "    net = keras.Sequential([keras.Input((10,)), keras.layers.Dense(1, activation='sigmoid')])\n"
    "    net.compile('adam', 'binary_crossentropy')\n    return net\n"
)

# valid Python that fails when imported: only a step with Keras can find out (model_probe)
BROKEN_MODEL = (ROOT / "inputs" / "model.py").read_text() + "\nraise ValueError('broken')\n"


@pytest.mark.tensorflow
@pytest.mark.slow
def test_failed_step_is_reported_and_resume_reruns_only_what_failed(tmp_path):
    inputs = _one_file_input(tmp_path / "in", model=FIXED_WIDTH_MODEL)
    workdir = tmp_path / "w"
    # every step a fresh interpreter (as under Docker or on REANA): the model_probe step
    # passes (the model builds at any width), model_check, with the layout's width, fails
    result = _run(
        "--input",
        str(inputs),
        "--engine",
        "local",
        "--no-warm",
        "--workdir",
        str(workdir),
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "model.py cannot be trained" in result.stderr
    assert "the model takes 10 inputs but the feature layout has" in result.stderr  # its log
    # named as the user's file: the run's private copy is overwritten on --resume
    assert str(tmp_path / "in" / "model.py") in result.stderr
    assert str(workdir / "model" / "model.py") not in result.stderr
    assert "rootml run --resume" in result.stderr
    assert not (workdir / "train" / "bundle").exists()  # no half-written bundle
    before = _steps(workdir)
    assert before["model_probe"]["status"] == "done"
    assert before["model_check"]["status"] == "failed"
    assert before.get("train", {}).get("status") != "done"
    assert not any(n.startswith(("evaluate", "publish")) for n in before)

    # the physicist fixes model.py and resumes: only train and what follows run again
    (tmp_path / "in" / "model.py").write_text((ROOT / "inputs" / "model.py").read_text())
    result = _run("--resume", "--workdir", str(workdir), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    after = _steps(workdir)
    # (the failed check stopped the run: a job cut short runs again)
    stopped = before["model_check"]["finished"]
    data_steps = [
        n
        for n in before
        if n not in ("train", "features", "model_probe")  # the model changed: probed again
        and before[n]["status"] == "done"
        and _seconds_between(before[n]["finished"], stopped) > 1.0
    ]
    assert {"check", "specs_0", "merge"} <= set(data_steps)
    for name in data_steps:
        assert after[name]["started"] == before[name]["started"], f"{name} ran again"
    for name in ("model_probe", "model_check"):
        assert after[name]["started"] != before[name]["started"]
        assert after[name]["status"] == "done"
    assert after["train"]["status"] == after["publish"]["status"] == "done"
    assert "reused from the earlier run" in result.stdout
    assert "test AUC" in result.stdout

    # the finished run resumed: nothing runs again (evaluate once wrote into train's bundle,
    # so every resume retrained)
    result = _run("--resume", "--workdir", str(workdir), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    again = _steps(workdir)
    assert {n: s["started"] for n, s in again.items()} == {
        n: s["started"] for n, s in after.items()
    }
    assert "test AUC" in result.stdout


# returns None only when called (a model file with no return at all is refused before any step)
NONE_MODEL = (
    "import keras\n\ndef model(idim):\n    net = keras.Sequential([keras.Input((idim,))])\n"
    "    return None if idim else net\n"
)


@pytest.mark.tensorflow
@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "message"),
    [
        (BROKEN_MODEL, "importing the model file raised ValueError: broken"),
        (NONE_MODEL, "model(idim) must return a keras Model, got NoneType"),
    ],
    ids=["raises-at-import", "returns-none"],
)
def test_a_model_file_that_cannot_train_stops_the_run_before_training(tmp_path, model, message):
    inputs = _one_file_input(tmp_path / "in", model=model)
    workdir = tmp_path / "w"
    result = _run(
        "--input", str(inputs), "--engine", "local", "--workdir", str(workdir), cwd=tmp_path
    )
    assert result.returncode == 1
    assert f"model.py cannot be trained: {message}" in result.stderr
    assert f"in file {tmp_path / 'in' / 'model.py'}" in result.stderr  # the user's file
    assert str(workdir / "model" / "model.py") not in result.stderr
    assert "rootml run --resume" in result.stderr
    # found by the model_probe step, beside reading the files, before any preprocessing
    assert _steps(workdir)["model_probe"]["status"] == "failed"
    assert result.stderr.count(message) == 1
    assert "step train failed" not in result.stderr
    assert not (workdir / "train" / "bundle").exists()
    # the steps running when the run stopped were ended with it: nothing writes afterwards
    # (yadage's pool workers outlived a terminated yadage and finished their steps)
    left = _tree_state(workdir)
    time.sleep(3)
    now = _tree_state(workdir)
    assert now == left, {
        k: (left.get(k), now.get(k)) for k in set(now) | set(left) if left.get(k) != now.get(k)
    }


def _tree_state(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.mark.parametrize(
    ("checksums", "message"),
    [
        (["none"], "1 checksums for 2 files"),
        (["none", "abc"], "neither 'none' nor a sha256"),
    ],
)
def test_check_step_wants_one_checksum_per_file(tmp_path, checksums, message):
    """zip would silently drop files past the shorter list: the check step refuses."""
    _one_file_input(tmp_path)
    doc = yaml.safe_load((tmp_path / "input.yml").read_text())
    write_events(tmp_path / "second.root", 100, 9, isSignal=np.zeros(100, np.int32))
    doc["files"] = ["mixed.root", "second.root"]
    (tmp_path / "input.yml").write_text(yaml.safe_dump(doc))
    result = subprocess.run(
        [
            ROOTML,
            "check",
            "--input",
            str(tmp_path / "input.yml"),
            "--files",
            "mixed.root",
            "second.root",
            "--checksums",
            *checksums,
            "--out",
            str(tmp_path / "c.json"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert message in result.stderr
    assert not (tmp_path / "c.json").exists()


def test_failure_report_shows_a_container_log_as_the_step_printed_it(tmp_path):
    """Under Docker, packtivity logs each line as a bytes repr; the report shows the text."""
    from rootml.workflow.run import _tail

    log = tmp_path / "train.run.log"
    log.write_text(
        "2026-11-22 07:18:11,711 |       pack.train.run |   INFO | "
        "b\"rootml train: error: syntax error in the model file at line 17: '(' was never"
        ' closed"\n'
        "2026-11-22 07:18:11,712 |       pack.train.run |   INFO | b'in file /w/model.py'\n"
        "a plain line of a local step\n"
    )
    assert _tail(log).splitlines() == [
        "rootml train: error: syntax error in the model file at line 17: '(' was never closed",
        "in file /w/model.py",
        "a plain line of a local step",
    ]


# ------------------------------------------------------------------ killed and resumed


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """One input folder and the outputs of a run of it that nothing interrupted."""
    base = tmp_path_factory.mktemp("uninterrupted")
    inputs = _one_file_input(base / "in")
    result = _run(
        "--input", str(inputs), "--engine", "local", "--workdir", str(base / "w"), cwd=base
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return inputs.parent, _outputs(base / "w")


def _outputs(workdir: Path) -> dict:
    """What must not depend on an interruption: the shards' rows, the trained weights, the
    ONNX graph, the test metrics."""
    import hashlib

    import h5py

    from rootml.workflow.run import step_records

    shards = {}  # the datasets' bytes (the attributes name the run's folders)
    for path in sorted(workdir.glob("preprocess_*/shards/shard-*.h5")):
        with h5py.File(path, "r") as h5:
            shards[path.name] = {k: hashlib.sha256(h5[k][:].tobytes()).hexdigest() for k in h5}
    manifest = json.loads((workdir / "train" / "bundle" / "manifest.json").read_text())["files"]
    metrics = json.loads((workdir / "evaluate" / "report" / "metrics.json").read_text())
    return {
        "shards": shards,
        "weights": {n: r["sha256"] for n, r in manifest.items() if n.startswith("variables/")},
        "onnx": manifest["model.onnx"]["sha256"],
        "auc": metrics["auc"],
        "steps": sorted(step_records(workdir)),
    }


def _seconds_between(earlier: str, later: str) -> float:
    import datetime as dt

    return (dt.datetime.fromisoformat(later) - dt.datetime.fromisoformat(earlier)).total_seconds()


@pytest.mark.tensorflow
@pytest.mark.slow
@pytest.mark.parametrize(
    "step",
    [
        "check",
        "fetch_0",
        "specs_0",
        "merge",
        "preprocess_0",
        "model_check",
        "features",
        "train",
        "evaluate",
        "publish",
        "provenance",
    ],
)
def test_a_run_killed_in_a_step_resumes_that_step_and_what_follows(uninterrupted, tmp_path, step):
    """kill -9 of the whole run (rootml, yadage, the warm interpreters, the step) while
    ``step`` runs; --resume re-runs what was running and what follows, reuses what was done,
    and ends with the outputs of a run never interrupted."""
    from rootml.workflow.run import step_records

    source, expected = uninterrupted
    inputs = shutil.copytree(source, tmp_path / "in") / "input.yml"
    workdir = tmp_path / "w"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [ROOTML, "run", "--input", str(inputs), "--engine", "local", "--workdir", str(workdir)]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    try:
        while (record := step_records(workdir).get(step)) is None or record.status != "running":
            assert proc.poll() is None, f"the run ended before {step} was seen running"
            assert time.monotonic() < deadline, f"{step} never ran"
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGSTOP)  # freeze everything, then look, then kill
        at_kill = step_records(workdir)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    running = {n for n, s in at_kill.items() if s.status == "running"}
    # yadage enters a finished step in its cache on its next pass over the graph: a step that
    # finished within a second of the kill may run again (model_check ends as features starts)
    killed_at = at_kill[step].record["started"]
    done = {
        n: s.record["started"]
        for n, s in at_kill.items()
        if s.status == "done" and _seconds_between(s.record["finished"], killed_at) > 1.0
    }
    assert step in running

    result = _run("--resume", "--workdir", str(workdir), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    after = step_records(workdir)
    for name, started in done.items():
        assert after[name].record["started"] == started, f"{name} ran again"
    for name in running:
        assert after[name].status == "done"
        assert after[name].record["started"] != at_kill[name].record["started"]
    assert _outputs(workdir) == expected


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # packtivity imports pipes
def test_yadages_step_cache_is_written_by_rename(tmp_path, monkeypatch):
    """A run killed while yadage rewrote its cache left a cut file that no resume could read:
    the plugin writes it beside and renames it into place."""
    import json as _json
    import types

    from yadage.backends.caching import CacheBuilder

    from rootml.workflow import plugin

    assert CacheBuilder.todisk is plugin._cache_todisk
    path = tmp_path / "cache.json"
    path.write_text('{"old": 1}')

    cache = types.SimpleNamespace(cachefile=str(path), cache={"step": {"result": "x"}})

    renames = []
    real_replace = type(path).replace
    monkeypatch.setattr(
        type(path),
        "replace",
        lambda self, target: renames.append(target) or real_replace(self, target),
    )
    plugin._cache_todisk(cache)
    assert [str(t) for t in renames] == [str(path)]
    assert _json.loads(path.read_text()) == {"step": {"result": "x"}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.json"]

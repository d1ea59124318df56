"""The data path through the installed ``rootml`` console script, as a workflow step runs it."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

ROOTML = shutil.which("rootml", path=str(Path(sys.executable).parent)) or "rootml"


def rootml(*args, cwd=None, ok=True):
    proc = subprocess.run(
        [ROOTML, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )
    if ok and proc.returncode != 0:
        raise AssertionError(f"rootml {args} failed:\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "example"
    rootml("sample", "--out", out, "--events", 3000, "--seed", 5)
    return out


def test_help_is_instant_and_lists_stages():
    proc = rootml("--help")
    for cmd in ("sample", "fetch", "specs", "merge", "preprocess"):
        assert cmd in proc.stdout
    code = (
        "import sys, rootml.cli; sys.exit('uproot' in sys.modules or 'tensorflow' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_mlaas4hep_inputs_run_unchanged(example, tmp_path):
    inputs = example / "inputs"
    specs = []
    for line in (inputs / "files.txt").read_text().split("\n"):
        if line.strip() and not line.startswith("#"):
            rootml(
                "specs",
                inputs / line.strip(),
                "--params",
                inputs / "params.json",
                "--out",
                f"{tmp_path}/specs/",
            )
    specs = sorted((tmp_path / "specs").glob("specs-*.json"))
    assert [p.name for p in specs] == ["specs-background.json", "specs-signal.json"]
    rootml(
        "merge",
        *specs,
        "--files",
        inputs / "files.txt",
        "--labels",
        inputs / "labels.txt",
        "--params",
        inputs / "params.json",
        "--out",
        tmp_path / "layout.json",
    )
    layout = json.loads((tmp_path / "layout.json").read_text())
    assert [f["basename"] for f in layout["files"]] == ["signal.root", "background.root"]
    assert [f["label"] for f in layout["files"]] == [1, 0]
    assert layout["chunk_size"] == 10_000
    proc = rootml(
        "preprocess",
        "--layout",
        tmp_path / "layout.json",
        "--chunk",
        "all",
        "--out",
        tmp_path / "shards",
    )
    shards = proc.stdout.split()
    assert len(shards) == len(layout["chunks"])
    n = 0
    for shard in shards:
        with h5py.File(shard) as h5:
            assert h5.attrs["layout_digest"] == layout["digest"]
            assert h5["x"].shape[1] == layout["dim"]
            assert np.isfinite(h5["x"][:]).all()
            n += h5["x"].shape[0]
    assert n == 3000


def test_input_yml_and_fetch_record(example, tmp_path):
    inputs = example / "inputs"
    for name in ("signal", "background"):
        rootml("fetch", example / f"{name}.root", "--out", tmp_path / name, "--tree", "events")
        record = tmp_path / name / "fetch.json"
        assert json.loads(record.read_text())["copied"] is False
        rootml(
            "specs",
            record,
            "--input",
            inputs / "input.yml",
            "--out",
            f"{tmp_path}/specs/",
            "--columns",
            tmp_path / name / "columns",
        )
        manifest = json.loads((tmp_path / name / "columns" / "columns.json").read_text())
        assert manifest["file"]["sha256"] == json.loads(record.read_text())["sha256"]
    rootml(
        "merge",
        *sorted((tmp_path / "specs").iterdir()),
        "--input",
        inputs / "input.yml",
        "--jagged-cap",
        "p99",
        "--counts",
        "--out",
        tmp_path / "layout.json",
    )
    layout = json.loads((tmp_path / "layout.json").read_text())
    assert "Jet__count" in layout["features"]

    def chunk0(out, *extra, ok=True):
        args = ("--layout", tmp_path / "layout.json", "--chunk", "0", "--out", tmp_path / out)
        return rootml("preprocess", *args, *extra, ok=ok)

    chunk0("s0.h5", "--fetched", tmp_path / "signal" / "fetch.json")
    assert (tmp_path / "s0.h5").is_file()
    # the same shard from the columns specs staged (what the workflow does)
    staged = [tmp_path / name / "columns" for name in ("signal", "background")]
    proc = chunk0("s0-staged.h5", "--columns", *staged)
    assert "read from the columns staged in" in proc.stderr
    with h5py.File(tmp_path / "s0.h5") as a, h5py.File(tmp_path / "s0-staged.h5") as b:
        for key in ("x", "y", "split", "entry"):
            assert np.array_equal(a[key][:], b[key][:])
    # a folder that is not a staging is refused, and no shard is written
    proc = chunk0("s0-bad.h5", "--columns", tmp_path / "signal", ok=False)
    _fails(proc, "no columns.json in", "rerun specs")
    assert not (tmp_path / "s0-bad.h5").exists()


def _fails(proc, *patterns):
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for pattern in patterns:
        assert pattern in proc.stderr, proc.stderr


def test_errors_are_one_message_exit_1_and_no_output(example, tmp_path):
    text = tmp_path / "notroot.root"
    text.write_text("this is a list of files, not a ROOT file\n")
    out = tmp_path / "specs-x.json"
    _fails(
        rootml("specs", text, "--tree", "events", "--out", out, ok=False),
        "cannot open as a ROOT file",
        f"in file {text}",
    )
    _fails(
        rootml("specs", example / "signal.root", "--tree", "Events", "--out", out, ok=False),
        "no TTree or RNTuple named 'Events'",
        "'events' (TTree)",
    )
    _fails(
        rootml(
            "specs",
            example / "signal.root",
            "--tree",
            "events",
            "--branches",
            "HT,Jet_pT",
            "--out",
            out,
            ok=False,
        ),
        "'Jet_pT'",
        "closest: 'Jet_pt'",
    )
    _fails(rootml("specs", tmp_path / "nope.root", "--out", out, ok=False), "does not exist")
    _fails(rootml("specs", "/store/mc/x.root", "--out", out, ok=False), "no redirector is set")
    bad = tmp_path / "params.json"
    bad.write_text(json.dumps({"chunk_sise": 10}))
    _fails(
        rootml("specs", example / "signal.root", "--params", bad, "--out", out, ok=False),
        "unknown params.json key 'chunk_sise'",
        "'chunk_size'",
    )
    assert not out.exists()
    assert not list(tmp_path.glob(".*tmp"))


def test_merge_errors(example, tmp_path):
    s = tmp_path / "specs"
    for name in ("signal", "background"):
        rootml("specs", example / f"{name}.root", "--tree", "events", "--out", f"{s}/")
    files = sorted(s.iterdir())
    out = tmp_path / "layout.json"
    _fails(rootml("merge", *files, "--labels", "1", "--out", out, ok=False), "for 2 files")
    _fails(rootml("merge", *files, "--labels", "1,1", "--out", out, ok=False), "only one class")
    _fails(
        rootml(
            "merge", *files, "--labels", "1,0", "--files", "a.root,b.root", "--out", out, ok=False
        ),
        "do not match the file list",
    )
    assert not out.exists()
    rootml("merge", *files, "--labels", "1,0", "--chunk-size", "500", "--out", out)
    _fails(
        rootml("preprocess", "--layout", out, "--chunk", "99", "--out", tmp_path / "x", ok=False),
        "outside the plan",
    )


def test_version():
    assert rootml("--version").stdout.startswith("rootml ")


@pytest.mark.tensorflow
@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs TensorFlow")
def test_model_path_through_the_console_script(example, tmp_path):
    """train -> evaluate -> predict as the workflow steps call them, with MLaaS4HEP inputs."""
    inputs = example / "inputs"
    for name in ("signal", "background"):
        rootml(
            "specs",
            example / f"{name}.root",
            "--params",
            inputs / "params.json",
            "--out",
            f"{tmp_path}/specs/",
        )
    rootml(
        "merge",
        *sorted((tmp_path / "specs").iterdir()),
        "--files",
        inputs / "files.txt",
        "--labels",
        inputs / "labels.txt",
        "--params",
        inputs / "params.json",
        "--jagged-cap",
        "p99",
        "--out",
        tmp_path / "layout.json",
    )
    rootml(
        "preprocess",
        "--layout",
        tmp_path / "layout.json",
        "--chunk",
        "all",
        "--out",
        tmp_path / "shards",
    )
    rootml(
        "train",
        "--layout",
        tmp_path / "layout.json",
        "--shards",
        tmp_path / "shards",
        "--model",
        inputs / "model.py",
        "--params",
        inputs / "params.json",
        "--epochs",
        2,
        "--out",
        tmp_path / "bundle",
    )
    metrics = json.loads(
        rootml(
            "evaluate",
            "--bundle",
            tmp_path / "bundle",
            "--shards",
            tmp_path / "shards",
            "--out",
            tmp_path / "report",
        ).stdout
    )
    assert 0.5 < metrics["auc"] <= 1.0
    _features_drawn_apart(tmp_path, metrics)
    rootml(
        "predict",
        "--bundle",
        tmp_path / "bundle",
        example / "signal.root",
        "--out",
        tmp_path / "p.csv",
    )
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0] == "file,entry,score_1"
    assert len(lines) == 1 + 1500
    bad = tmp_path / "bad_model.py"
    bad.write_text("def model(idim):\n    return None\n")
    _fails(
        rootml(
            "train",
            "--layout",
            tmp_path / "layout.json",
            "--shards",
            tmp_path / "shards",
            "--model",
            bad,
            "--out",
            tmp_path / "b2",
            ok=False,
        ),
        "must return a keras Model",
        str(bad),
    )
    assert not (tmp_path / "b2").exists()


def _features_drawn_apart(tmp_path, metrics):
    """The workflow's features step: the same features.png and metrics as evaluate's own."""
    rootml(
        "features",
        "--layout",
        tmp_path / "layout.json",
        "--shards",
        tmp_path / "shards",
        "--out",
        tmp_path / "features",
    )
    evaluate = ("evaluate", "--bundle", tmp_path / "bundle", "--shards", tmp_path / "shards")
    again = json.loads(
        rootml(*evaluate, "--features", tmp_path / "features", "--out", tmp_path / "r2").stdout
    )
    assert again == metrics
    for png in ("features.png", "history.png", "roc.png"):
        assert (tmp_path / "r2" / png).read_bytes() == (tmp_path / "report" / png).read_bytes()
    doc = json.loads((tmp_path / "features" / "features.json").read_text())
    doc["layout_digest"] = "0" * 16
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "features.json").write_text(json.dumps(doc))
    _fails(
        rootml(*evaluate, "--features", tmp_path / "other", "--out", tmp_path / "r3", ok=False),
        "layout digest",
        str(tmp_path / "other" / "features.json"),
    )
    _fails(
        rootml(*evaluate, "--features", tmp_path / "none", "--out", tmp_path / "r3", ok=False),
        "does not exist",
        "rootml features",
    )
    assert not (tmp_path / "r3").exists()


def test_a_full_disk_is_one_message_naming_what_was_written():
    """A real ENOSPC (``/dev/full`` fails every write with it): one line naming the output
    and the fix; errors a user cannot act on are not disguised."""
    from rootml.cli import os_error_message

    with (
        pytest.raises(OSError, match="No space left on device") as full,
        open("/dev/full", "wb", buffering=0) as handle,
    ):
        handle.write(b"x" * 4096)
    message = os_error_message(full.value, "run/shards")
    assert "an output under run/shards" in message
    assert "no space left on the device" in message
    with pytest.raises(FileNotFoundError) as missing:
        open("/nonexistent-folder/x", "rb")  # noqa: SIM115
    assert os_error_message(missing.value) is None  # a bug or a bad name: not "disk full"
    denied = PermissionError(13, "Permission denied", "/data/ro/layout.json")
    assert os_error_message(denied).startswith("/data/ro/layout.json: permission denied")

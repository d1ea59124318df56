"""Provenance and replay: a recorded run replays bit for bit; bad manifests and changed inputs
are refused before anything is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_workflow import _one_file_input

from rootml.storage import sha256_file
from rootml.workflow import provenance

ROOTML = str(Path(sys.executable).parent / "rootml")


def _rootml(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [ROOTML, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )


def _manifest(tmp_path: Path, **changes) -> Path:
    """A small hand-written manifest of a run on one (real) input file."""
    data = tmp_path / "data.root"
    data.write_bytes(b"recorded bytes")
    doc = {
        "schema": provenance.SCHEMA,
        "created": "2026-11-22T00:00:00+00:00",
        "rootml": {"version": "0.1.0", "git_commit": None},
        "engine": "local",
        "parameters": {"name": "m", "jobs": 2, "model": "none"},
        "seed": 1,
        "inputs": [
            {"source": str(data), "path": str(data), "size": 14, "sha256": sha256_file(data)}
        ],
        "files": {
            "input.yml": {"sha256": "x", "content": "files: [a]\nlabels: [1]\n"},
            "params.json": None,
            "model.py": None,
        },
        "environments": {"local": {"python": "3.11", "packages": {}}},
        "steps": {},
        "outputs": {},
    }
    doc.update(changes)
    path = tmp_path / "provenance.json"
    path.write_text(json.dumps(doc))
    return path


def test_manifest_that_does_not_parse(tmp_path):
    bad = tmp_path / "provenance.json"
    bad.write_text("{not json")
    result = _rootml("replay", str(bad), "--workdir", str(tmp_path / "w"), cwd=tmp_path)
    assert result.returncode == 1
    assert "does not parse" in result.stderr
    assert str(bad) in result.stderr
    assert not (tmp_path / "w").exists()


def test_manifest_of_another_schema_version(tmp_path):
    path = _manifest(tmp_path, schema="rootml-provenance/0")
    result = _rootml("replay", str(path), "--workdir", str(tmp_path / "w"), cwd=tmp_path)
    assert result.returncode == 1
    assert "'rootml-provenance/0'" in result.stderr
    assert provenance.SCHEMA in result.stderr
    assert not (tmp_path / "w").exists()


def test_replay_refuses_an_input_whose_checksum_changed(tmp_path):
    path = _manifest(tmp_path)
    (tmp_path / "data.root").write_bytes(b"other bytes now")
    result = _rootml("replay", str(path), "--workdir", str(tmp_path / "w"), cwd=tmp_path)
    assert result.returncode == 1
    assert "input files differ from the recorded run" in result.stderr
    assert "data.root: sha256 is now" in result.stderr
    assert not (tmp_path / "w").exists()


def test_replay_refuses_a_missing_image(tmp_path):
    path = _manifest(
        tmp_path,
        engine="docker",
        environments={"rootml/nothere:9.9.9": {"image_id": "sha256:0123", "packages": {}}},
    )
    result = _rootml("replay", str(path), "--workdir", str(tmp_path / "w"), cwd=tmp_path)
    assert result.returncode == 1
    assert "rootml/nothere:9.9.9" in result.stderr
    assert "make images" in result.stderr
    assert not (tmp_path / "w").exists()


def test_compare_lists_differences_and_their_environment():
    old = {
        "outputs": {
            "train/bundle/model.onnx": "a",
            "evaluate/report/metrics.json": "m",
            "merge/layout.json": "s",
        },
        "steps": {"train": {"engine": "docker", "image": "rootml/train:0.1.0"}},
        "environments": {
            "rootml/train:0.1.0": {
                "image_id": "i1",
                "python": "3.11.2",
                "packages": {"numpy": "2.3.0"},
            }
        },
    }
    new = {
        "outputs": {
            "train/bundle/model.onnx": "b",
            "evaluate/report/metrics.json": "m",
            "merge/layout.json": "s",
        },
        "steps": {"train": {"engine": "local", "image": "rootml/train:0.1.0"}},
        "environments": {"local": {"python": "3.11.7", "packages": {"numpy": "2.3.1"}}},
    }
    result = provenance.compare(old, new)
    assert not result["identical_results"]
    assert result["differ"] == ["train/bundle/model.onnx"]
    assert result["results"]["train/bundle/model.onnx"] == "differs"
    changes = result["environment"]["rootml/train:0.1.0 -> local"]
    assert "numpy: 2.3.0 -> 2.3.1" in changes
    assert "python: 3.11.2 -> 3.11.7" in changes


@pytest.mark.tensorflow
@pytest.mark.slow
def test_run_replays_bit_for_bit_and_another_seed_differs(tmp_path):
    inputs = _one_file_input(tmp_path / "in")
    first = _rootml(
        "run",
        "--input",
        str(inputs),
        "--engine",
        "local",
        "--no-warm",  # every step a fresh interpreter; the replay below forks them warm
        "--workdir",
        str(tmp_path / "a"),
        cwd=tmp_path,
    )
    assert first.returncode == 0, first.stderr
    manifest = provenance.load(tmp_path / "a" / "provenance.json")
    assert manifest["inputs"][0]["sha256"] == sha256_file(tmp_path / "in" / "mixed.root")
    assert "train/bundle/variables/variables.data-00000-of-00001" in manifest["outputs"]
    assert any(k.startswith("preprocess_0/shards/") for k in manifest["outputs"])
    assert manifest["environments"]["local"]["packages"]["tensorflow-cpu"]
    assert manifest["steps"]["train"]["finished"] > manifest["steps"]["train"]["started"]
    assert manifest["files"]["input.yml"]["content"].startswith("# written by rootml run")

    # a replay: identical weights and metrics (and shards, layout), reported as such, though
    # its steps fork from warm interpreters and the first run's started afresh
    replay = _rootml(
        "replay",
        str(tmp_path / "a" / "provenance.json"),
        "--workdir",
        str(tmp_path / "b"),
        cwd=tmp_path,
    )
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert "IDENTICAL" in replay.stdout
    report = json.loads((tmp_path / "b" / "replay.json").read_text())
    assert report["identical_results"]
    assert set(report["differ"]) <= set(provenance.EXPECTED_TO_DIFFER)
    assert report["environment"] == {}

    # the same input with another seed: different weights
    doc = yaml.safe_load(inputs.read_text())
    doc["seed"] = 4
    inputs.write_text(yaml.safe_dump(doc))
    other = _rootml(
        "run",
        "--input",
        str(inputs),
        "--engine",
        "local",
        "--workdir",
        str(tmp_path / "c"),
        "--mlflow",
        cwd=tmp_path,
    )
    assert other.returncode == 0, other.stderr
    result = provenance.compare(manifest, provenance.load(tmp_path / "c" / "provenance.json"))
    assert not result["identical_results"]
    assert result["results"]["train/bundle/variables/variables.data-00000-of-00001"] == "differs"

    # tracked in MLflow: parameters, per-epoch metrics, test metrics, bundle and report
    tracking = json.loads((tmp_path / "c" / "track" / "tracking.json").read_text())
    assert tracking["uri"] == f"sqlite:///{tmp_path / 'c' / 'mlflow.db'}"
    import mlflow

    client = mlflow.tracking.MlflowClient(tracking["uri"])
    run = client.get_run(tracking["run_id"])
    assert run.data.params["seed"] == "4"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [0, 1]
    assert 0.5 < run.data.metrics["test_auc"] <= 1
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "bundle")}
    assert "bundle/model.onnx" in artifacts
    assert "report/report.html" in {
        a.path for a in client.list_artifacts(run.info.run_id, "report")
    }


def test_track_none_and_missing_inputs(tmp_path):
    result = _rootml(
        "track",
        "--mlflow",
        "none",
        "--bundle",
        "b",
        "--report",
        "r",
        "--out",
        str(tmp_path / "t.json"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "t.json").read_text()) == {"tracked": False}
    result = _rootml(
        "track",
        "--mlflow",
        f"sqlite:///{tmp_path}/m.db",
        "--bundle",
        str(tmp_path / "nobundle"),
        "--report",
        str(tmp_path),
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "nobundle/provenance.json is missing" in result.stderr

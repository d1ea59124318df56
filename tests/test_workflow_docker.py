"""The workflow end to end in Docker: the real step images (built by ``make images``), a real
Docker engine, and ``rootml serve`` from the serve image as the TFaaS server.

Skipped when no Docker engine answers (``.ci/run`` starts one; ``bash scripts/start-docker.sh``
does it by hand).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from rootml.workflow.docker import docker_answers, image_id, step_images

ROOT = Path(__file__).resolve().parents[1]
ROOTML = str(Path(sys.executable).parent / "rootml")

pytestmark = [pytest.mark.tensorflow, pytest.mark.slow]

if not docker_answers():
    pytest.skip(
        "no Docker engine answers (start one: bash scripts/start-docker.sh)",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    """The step images and the serve image, built (or found up to date) by make images."""
    result = subprocess.run(
        ["bash", "scripts/build-images.sh"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3000,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    wanted = [
        *step_images(ROOT),
        "rootml/serve:" + (ROOT / "docker-images" / "serve" / "VERSION").read_text().strip(),
    ]
    ids = {image: image_id(image) for image in wanted}
    assert all(ids.values()), ids
    return ids


@pytest.fixture
def served_from_image(images, tmp_path):
    """``rootml serve`` in the rootml/serve container on 127.0.0.1 (host network)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    models = tmp_path / "models"
    models.mkdir()
    image = next(i for i in images if i.startswith("rootml/serve:"))
    name = f"rootml-test-serve-{port}"
    subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "--rm",
            "--name",
            name,
            "--network",
            "host",
            "-v",
            f"{models}:{models}",
            image,
            "rootml",
            "serve",
            "--models",
            str(models),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        check=True,
        capture_output=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                with urllib.request.urlopen(url + "/v2/health/live", timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        else:
            logs = subprocess.run(
                ["docker", "logs", name], capture_output=True, text=True, check=False
            )
            pytest.fail(f"the serve container did not answer: {logs.stdout}{logs.stderr}")
        yield url
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def test_run_in_docker_end_to_end(images, served_from_image, tmp_path):
    sample = tmp_path / "example"
    subprocess.run(
        [ROOTML, "sample", "--out", str(sample), "--events", "3000", "--seed", "4"],
        check=True,
        capture_output=True,
    )
    doc = yaml.safe_load((sample / "inputs" / "input.yml").read_text())
    doc["training"]["epochs"] = 2
    (sample / "inputs" / "input.yml").write_text(yaml.safe_dump(doc))
    workdir = tmp_path / "w"
    result = subprocess.run(
        [
            ROOTML,
            "run",
            "--input",
            str(sample / "inputs" / "input.yml"),
            "--engine",
            "docker",
            "--url",
            served_from_image,
            "--workdir",
            str(workdir),
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        timeout=1200,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "engine docker" in result.stdout
    run = json.loads((workdir / "run.json").read_text())
    steps = run["steps"]
    assert {s["engine"] for s in steps.values()} == {"docker"}
    assert {s["status"] for s in steps.values()} == {"done"}
    for step in steps.values():
        assert step["image_id"] == images[step["image"]], step["name"]
        assert (Path(step["workdir"]) / "_packtivity" / f"{step['name']}.cid").is_file()
    # TensorFlow only where it belongs: the data steps ran in the image without it
    assert steps["preprocess_0"]["image"].startswith("rootml/data:")
    assert steps["train"]["image"].startswith("rootml/train:")
    # across containers too, preprocess read the columns the specs containers staged
    log = (workdir / "preprocess_0" / "_packtivity" / "preprocess_0.run.log").read_text()
    assert "read from the columns staged in" in log
    # every step's command forked from the warm container of its own image, in its folder
    warm_log = (workdir / "warm.log").read_text()
    for kind, command, folder, image in [
        ("data", "specs", "specs_0", "data"),
        ("data", "preprocess", "preprocess_0", "data"),
        ("train", "train", "train", "train"),
        ("evaluate", "evaluate", "evaluate", "train"),  # the train image's container without TF
        ("publish", "provenance", "provenance", "publish"),
    ]:
        line = rf"^warm {kind}: {command} \(pid \d+\) in /work$"
        assert re.search(line, warm_log, re.MULTILINE), (
            f"{command} did not run in the warm {kind} container:\n{warm_log}"
        )
        assert steps[folder]["image"].startswith(f"rootml/{image}:")
    # and the warm containers went with the run
    left = subprocess.run(
        ["docker", "ps", "-aq", "--filter", "name=rootml-warm-"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert left.stdout.strip() == ""
    assert 0.5 < run["summary"]["auc"] <= 1.0
    receipt = json.loads((workdir / "publish" / "receipt.json").read_text())
    assert receipt["url"].rstrip("/") == served_from_image
    with urllib.request.urlopen(served_from_image + "/models", timeout=10) as reply:
        assert receipt["name"] in reply.read().decode()


@pytest.mark.parametrize("warm", [True, False], ids=["warm-container", "fresh-container"])
def test_a_broken_model_file_stops_a_docker_run_from_the_train_image_as_it_starts(
    images, tmp_path, warm
):
    sample = tmp_path / "example"
    subprocess.run(
        [ROOTML, "sample", "--out", str(sample), "--events", "2000", "--seed", "5"],
        check=True,
        capture_output=True,
    )
    (sample / "inputs" / "model.py").write_text(
        "import keras\n\ndef model(idim):\n    return None if idim else keras.Sequential()\n"
    )
    doc = yaml.safe_load((sample / "inputs" / "input.yml").read_text())
    doc["model"] = "model.py"
    (sample / "inputs" / "input.yml").write_text(yaml.safe_dump(doc))
    workdir = tmp_path / "w"
    result = subprocess.run(
        [ROOTML, "run", "--input", str(sample / "inputs" / "input.yml"), "--engine", "docker",
         "--workdir", str(workdir), *([] if warm else ["--no-warm"])],
        capture_output=True,
        text=True,
        # the model_probe step: in the warm train container, or a fresh one (--no-warm)
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        timeout=1200,
        check=False,
    )  # fmt: skip
    assert result.returncode == 1
    message = "model(idim) must return a keras Model, got NoneType"
    assert result.stderr.count(message) == 1, result.stderr
    assert "model.py cannot be trained" in result.stderr
    assert f"in file {sample / 'inputs' / 'model.py'}" in result.stderr  # the user's file
    assert "step train failed" not in result.stderr
    checked = json.loads((workdir / "model_probe" / "_rootml" / "step.json").read_text())
    assert (checked["status"], checked["engine"]) == ("failed", "docker")
    assert checked["image"].startswith("rootml/train:")

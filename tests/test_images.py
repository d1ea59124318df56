"""The workflow's Docker images (docker-images/, scripts/build-images.sh).

The folder, tag and pin checks run everywhere. The build and run checks need a Docker engine
(`docker info`) and skip without one; `.ci/run` starts one with scripts/start-docker.sh. The
first build takes minutes (a debootstrap base when python:3.11-slim cannot be pulled, the wheel
downloads); later ones reuse Docker's layer cache and build/wheelhouse/.
"""

from __future__ import annotations

import base64
import functools
import importlib.util
import json
import os
import re
import subprocess
import sys
import urllib.request
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from servers import free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "docker-images"
BUILD = ROOT / "scripts" / "build-images.sh"
NAMES = ("data", "train", "publish", "serve")
ROOTML_VERSION = version("rootml")


@functools.cache
def _generator():
    """scripts/image-requirements.py, the one place that says which extras each image has."""
    spec = importlib.util.spec_from_file_location(
        "image_requirements", ROOT / "scripts" / "image-requirements.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def version_of(name: str) -> str:
    return (IMAGES / name / "VERSION").read_text().strip()


def pins_of(name: str) -> dict[str, Requirement]:
    lines = (IMAGES / name / "requirements.txt").read_text().splitlines()
    reqs = [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]
    return {canonicalize_name(r.name): r for r in reqs}


# ------------------------------------------------------------------ folders, tags and pins


def test_exactly_the_four_images():
    assert sorted(p.name for p in IMAGES.iterdir() if p.is_dir()) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_image_folder(name):
    folder = IMAGES / name
    for file in ("Dockerfile", "VERSION", "requirements.txt"):
        assert (folder / file).is_file(), f"{folder / file} is missing"
    assert re.fullmatch(r"\d+\.\d+\.\d+", version_of(name)), (
        f"{folder / 'VERSION'} must hold a version like 0.1.0, not {version_of(name)!r}"
    )
    dockerfile = (folder / "Dockerfile").read_text()
    installs = [line for line in dockerfile.splitlines() if "pip install" in line]
    assert installs, "the Dockerfile installs nothing"
    assert all("--no-index" in line for line in installs), "pip in a build must not reach an index"
    # multi-stage: the final image starts again from the base and gets only /opt/rootml
    assert dockerfile.count("FROM ${BASE}") == 2
    assert f'io.rootml.image="{name}"' in dockerfile


def _environments(node):
    if isinstance(node, dict):
        if "image" in node:
            yield node
        for value in node.values():
            yield from _environments(value)
    elif isinstance(node, list):
        for value in node:
            yield from _environments(value)


def test_workflow_images_are_the_built_tags():
    files = sorted((ROOT / "steps").glob("*.yml")) + sorted((ROOT / "workflows").glob("*.yml"))
    assert (ROOT / "steps" / "steps.yml").is_file(), "steps/steps.yml is missing"
    envs = [env for f in files for env in _environments(yaml.safe_load(f.read_text()))]
    assert envs, "steps/steps.yml names no image"
    for env in envs:
        image, tag = env["image"], env.get("imagetag")
        assert image.startswith("rootml/"), f"{image}: the workflow's images are rootml/<name>"
        name = image.removeprefix("rootml/")
        assert name in NAMES, f"{image} has no docker-images/{name}/ (expected one of {NAMES})"
        assert isinstance(tag, str), f"{image}: imagetag {tag!r} must be a quoted string"
        assert tag == version_of(name), (
            f"{image}:{tag} in the steps, but docker-images/{name}/VERSION says {version_of(name)}"
        )


@pytest.mark.parametrize("name", NAMES)
def test_requirements_pin_what_the_image_needs(name):
    pins = pins_of(name)
    for key, req in pins.items():
        assert len(req.specifier) == 1, f"{req}: pin exactly one version"
        assert next(iter(req.specifier)).operator == "==", f"{req}: pin with =="
        assert req.url is None, f"{req}: a bare pin"
        assert req.marker is None, f"{req}: a bare pin"
        assert not req.extras, f"{req}: a bare pin"
        assert key not in {"rootml", "pytest", "hypothesis", "ruff", "scikit-learn"}, key
    # rootml's own requirements for this image, each pinned to a version they accept
    for req in _generator().roots(name):
        key = canonicalize_name(req.name)
        assert key in pins, f"docker-images/{name}/requirements.txt lacks {req}"
        pinned = next(iter(pins[key].specifier)).version
        assert pinned in req.specifier, f"{name} pins {key}=={pinned}, rootml requires {req}"
    if name not in ("train", "serve"):  # serve converts uploads without model.onnx
        assert not {"tensorflow", "tensorflow-cpu", "keras"} & set(pins), name
    if name == "data":
        assert {"xrootd", "fsspec-xrootd", "uproot", "awkward", "h5py"} <= set(pins)
    if name == "serve":
        assert "httpx2" not in pins  # Starlette's TestClient transport; the server never uses it
        assert {"tf2onnx", "onnx", "grpcio"} <= set(pins)


# Registry addresses, index options and CA bundles belong to the host's pip configuration,
# read at build time; none may be written into the images' files or the build script.
FORBIDDEN = re.compile(
    r"[a-z][a-z0-9+.-]*://|index-url|trusted-host|find-links\s*=|\bPIP_(INDEX|EXTRA_INDEX|"
    r"FIND_LINKS|CERT|TRUSTED)|ca-certificates\.crt|/etc/ssl/|\.pem\b|CA_BUNDLE|SSL_CERT_FILE",
    re.IGNORECASE,
)


@pytest.mark.parametrize(
    "line",
    [
        "RUN pip install --index-url http://mirror.example/simple x",
        "COPY ca-certificates.crt /etc/ssl/certs/",
        "ENV PIP_CERT=/host/ca.pem",
        "ENV PIP_INDEX_URL=x",
    ],
)
def test_forbidden_lines_are_recognised(line):
    assert FORBIDDEN.search(line)


def test_no_index_urls_or_ca_bundles_in_image_files():
    files = [p for p in IMAGES.rglob("*") if p.is_file()]
    files += [ROOT / "scripts" / "build-images.sh", ROOT / "scripts" / "start-docker.sh"]
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip().startswith("#"):
                continue
            assert not FORBIDDEN.search(line), f"{path.relative_to(ROOT)}:{number}: {line}"


def build_images(*args, env=None, timeout=3600):
    return subprocess.run(
        ["bash", str(BUILD), *args],
        cwd=ROOT,
        env={**os.environ, "VENV": sys.prefix, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_no_engine_is_a_clear_error():
    proc = build_images(env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"}, timeout=60)
    assert proc.returncode != 0
    assert "no Docker engine answers" in proc.stderr
    assert "scripts/start-docker.sh" in proc.stderr


def test_unknown_image_is_refused():
    proc = build_images("--check", "gpu", timeout=60)
    assert proc.returncode != 0
    assert "no image 'gpu'" in proc.stderr
    assert "data train publish serve" in proc.stderr


# ------------------------------------------------------------------ built and run


def docker(*args, timeout=600, check=True, **kwargs):
    proc = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def engine():
    try:
        ok = docker("info", timeout=60, check=False).returncode == 0
    except FileNotFoundError:
        ok = False
    if not ok:
        pytest.skip("no Docker engine answers (start one: bash scripts/start-docker.sh)")


def _ids(stdout: str) -> dict[str, str]:
    ids = {}
    for name in NAMES:
        tag = re.escape(f"rootml/{name}:{version_of(name)}")
        match = re.search(rf"^{tag}\s+([0-9a-f]{{12}})\s+\d+ MB\s+\d+s$", stdout, re.MULTILINE)
        assert match, f"no result line for rootml/{name} in:\n{stdout}"
        ids[name] = match[1]
    return ids


@pytest.fixture(scope="module")
def built(engine):
    proc = build_images("--no-check")
    assert proc.returncode == 0, f"build-images.sh failed:\n{proc.stdout}\n{proc.stderr}"
    return _ids(proc.stdout)


def _layers(name: str) -> list[str]:
    image = f"rootml/{name}:{version_of(name)}"
    return json.loads(docker("image", "inspect", "-f", "{{json .RootFS.Layers}}", image).stdout)


@pytest.mark.slow
def test_rebuild_is_cached(built):
    """Nothing changed: the same images. Sources changed meanwhile: only the rootml layer differs."""
    key = ROOT / "build" / "images" / "dist" / ".key"
    before_key, before_layers = key.read_text(), {name: _layers(name) for name in NAMES}
    proc = build_images("--no-check")
    assert proc.returncode == 0, proc.stderr
    if key.read_text() == before_key:
        assert _ids(proc.stdout) == built
    for name in NAMES:
        assert _layers(name)[:-1] == before_layers[name][:-1], f"{name}: dependencies rebuilt"


@pytest.mark.slow
def test_check_passes_as_reana_runs_steps(built):
    proc = build_images("--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in NAMES:
        assert re.search(rf"^rootml/{name}:\S+\s+ok \(rootml \d", proc.stdout, re.MULTILINE)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("RUN rm /usr/bin/base64", "base64"),
        (
            "RUN mkdir /opt/rootml/lib/python3.11/site-packages/tensorflow",
            "tensorflow must not be importable",
        ),
    ],
)
def test_check_catches_a_broken_data_image(built, breakage, message):
    broken = f"rootml-test/data:{version_of('data')}"
    dockerfile = f"FROM rootml/data:{version_of('data')}\n{breakage}\n"
    docker("build", "--network", "none", "-t", broken, "-", input=dockerfile)
    try:
        proc = build_images("--check", "data", env={"ROOTML_IMAGE_REPO": "rootml-test"})
    finally:
        docker("rmi", broken)
    assert proc.returncode != 0
    assert "FAILED" in proc.stdout
    assert message in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_image_metadata(built, name):
    (info,) = json.loads(docker("image", "inspect", f"rootml/{name}:{version_of(name)}").stdout)
    config = info["Config"]
    labels = config["Labels"]
    assert labels["io.rootml.image"] == name
    assert labels["org.opencontainers.image.version"] == version_of(name)
    assert labels["io.rootml.version"] == ROOTML_VERSION
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["PATH"].startswith("/opt/rootml/bin:")
    assert env["HOME"] == "/home/rootml"
    assert config["WorkingDir"] == "/work"
    assert config["User"] in ("", "root")  # packtivity runs as the image user, REANA as 1000:0
    assert not config.get("Entrypoint")  # steps pass their own command
    assert set(config.get("ExposedPorts") or {}) == ({"8083/tcp"} if name == "serve" else set())


@pytest.mark.slow
def test_a_reana_style_step_as_any_user(built, tmp_path):
    """`bash -c` with a base64 script, as uid 1000/gid 0 (REANA) and as another uid."""
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)
    for user in ("1000:0", "4242:4242"):
        uid = user.split(":")[0]
        script = (
            f"set -euo pipefail; rootml --version > {out}/version-{uid}.txt; touch $HOME/h ./w\n"
            # the wheels and the build context stayed in the builder stage
            "test ! -e /tmp/build; if find /opt /tmp -name '*.whl' | grep .; then exit 3; fi\n"
        )
        encoded = base64.b64encode(script.encode()).decode()
        docker(
            "run", "--rm", "--network", "none", "-u", user, "-v", f"{out}:{out}",
            f"rootml/publish:{version_of('publish')}",
            "bash", "-c", f"echo {encoded} | base64 -d | bash",
        )  # fmt: skip
        assert (out / f"version-{uid}.txt").read_text() == f"rootml {ROOTML_VERSION}\n"


@pytest.mark.slow
def test_serve_and_publish_images_talk_over_loopback(built, tmp_path):
    """`rootml serve` in its image on 127.0.0.1 (`--network host`), asked from the publish image."""
    port = free_port()
    models = tmp_path / "models"
    models.mkdir()
    models.chmod(0o777)
    cid = docker(
        "run", "-d", "--network", "host", "-u", "1000:0", "-v", f"{models}:{models}",
        f"rootml/serve:{version_of('serve')}",
        "rootml", "serve", "--models", str(models), "--port", str(port),
    ).stdout.strip()  # fmt: skip

    def running():
        state = docker("inspect", "-f", "{{.State.Running}}", cid, check=False)
        return state.stdout.strip() == "true"

    try:
        wait_for_port(port, 60, alive=running)
        url = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{url}/v2/health/live", timeout=10) as response:
            assert response.status == 200
        docker(
            "run", "--rm", "--network", "host", "-u", "1000:0",
            f"rootml/publish:{version_of('publish')}", "rootml", "models", "--url", url,
        )  # fmt: skip
        # a Go TFaaS user's SavedModel (no model.onnx), made and uploaded inside the image:
        # the image's server converts it to ONNX at upload (TensorFlow and tf2onnx are there)
        made = docker("exec", cid, "python", "-c", SAVEDMODEL_UPLOAD, url).stdout
        reply, row, expected = json.loads(made.strip().splitlines()[-1])
        assert reply["backend"] == "onnx", reply
        assert reply["converted"]["exact"] is True
        body = json.dumps({"model": "ext", "values": row}).encode()
        with urllib.request.urlopen(urllib.request.Request(f"{url}/json", data=body),
                                    timeout=30) as response:  # fmt: skip
            got = json.loads(response.read())
        assert got == pytest.approx(expected, abs=1e-5)
    finally:
        docker("rm", "-f", cid, check=False)


SAVEDMODEL_UPLOAD = """
import io, json, sys, tarfile, tempfile, urllib.request
import keras, numpy as np
keras.utils.set_random_seed(1)
net = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(8, activation="relu"),
                        keras.layers.Dense(1, activation="sigmoid")])
folder = tempfile.mkdtemp() + "/ext"
net.export(folder, verbose=False)
open(folder + "/params.json", "w").write(json.dumps({"name": "ext"}))
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w:gz") as tar:
    tar.add(folder, arcname="ext")
request = urllib.request.Request(sys.argv[1] + "/upload", data=buf.getvalue())
reply = json.loads(urllib.request.urlopen(request, timeout=300).read())
row = [0.5, -1.0, 2.0, 0.1]
print(json.dumps([reply, row, net(np.array([row], np.float32)).numpy()[0].tolist()]))
"""

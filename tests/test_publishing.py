"""``rootml publish`` and the client commands: the tarball TFaaS expects, uploads to
``rootml serve`` (raw and form, with and without a token) and to a stub with the Go TFaaS's
API shape, the reference check, the receipt, and the console script end to end."""

from __future__ import annotations

import gzip
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

pytest.importorskip("starlette")
pytestmark = [
    pytest.mark.tensorflow,
    pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs TensorFlow"),
]

from server.helpers import TOKEN, trained_bundles
from servers import free_port

from rootml.client import Client
from rootml.exceptions import ConfigError, PublishError
from rootml.publishing import pack_bundle, publish
from rootml.server import ArchiveLimits, EmbeddedServer, ServerConfig
from rootml.server.archive import scan_tarball

if TYPE_CHECKING:
    from typing_extensions import Self

ROOTML = shutil.which("rootml", path=str(Path(sys.executable).parent)) or "rootml"


@pytest.fixture(scope="session")
def bundles(tmp_path_factory) -> dict:
    return trained_bundles(tmp_path_factory.getbasetemp() / "serve-bundles")


@pytest.fixture
def server(tmp_path):
    with EmbeddedServer(ServerConfig(models=tmp_path / "store", port=0)) as s:
        yield s


def test_tarball_has_one_folder_named_after_the_model_and_is_reproducible(bundles, tmp_path):
    first, second = io.BytesIO(), io.BytesIO()
    pack_bundle(bundles["a"], "published", first)
    pack_bundle(bundles["a"], "published", second)
    assert first.getvalue() == second.getvalue()
    with tarfile.open(fileobj=io.BytesIO(first.getvalue())) as tar:
        names = tar.getnames()
        params = json.load(tar.extractfile("published/params.json"))
    assert all(n == "published" or n.startswith("published/") for n in names)
    assert "published/variables/variables.index" in names
    assert params["name"] == "published"
    assert scan_tarball(io.BytesIO(first.getvalue()), ArchiveLimits()).top == "published"
    linked = tmp_path / "linked"
    shutil.copytree(bundles["a"], linked)
    (linked / "extra").symlink_to("/etc/hostname")
    with pytest.raises(ConfigError, match="symbolic link"):
        pack_bundle(linked, "x", io.BytesIO())
    with pytest.raises(ConfigError, match="not allowed"):
        pack_bundle(bundles["a"], "bad-name", io.BytesIO())


@pytest.mark.parametrize("form", [False, True], ids=["raw-gzip-body", "multipart-form"])
def test_publish_to_rootml_serve_writes_a_receipt(server, bundles, tmp_path, form):
    out = tmp_path / "receipt.json"
    receipt = publish(bundles["a"], server.url, out, name="physics_v1", form=form)
    assert json.loads(out.read_text()) == receipt
    assert receipt["server"] == "rootml"
    assert receipt["name"] == "physics_v1"
    assert receipt["url"] == server.url
    packed = io.BytesIO()
    pack_bundle(bundles["a"], "physics_v1", packed)
    import hashlib

    assert receipt["tarball"]["sha256"] == hashlib.sha256(packed.getvalue()).hexdigest()
    assert receipt["server_reply"]["sha256"] == receipt["tarball"]["sha256"]
    assert receipt["reference"]["rows"] == 16
    assert receipt["reference"]["max_abs_difference"] <= 1e-5
    assert receipt["started"] <= receipt["uploaded"] <= receipt["verified"]
    assert "token" not in json.dumps(receipt).lower()
    assert [m["name"] for m in Client(server.url).models()] == ["physics_v1"]


def test_publish_with_a_token(tmp_path, bundles):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    config = ServerConfig(models=tmp_path / "store", port=0, token_file=token_file)
    out = tmp_path / "receipt.json"
    with EmbeddedServer(config) as s:
        with pytest.raises(PublishError, match="answered 401: this route needs"):
            publish(bundles["a"], s.url, out)
        assert not out.exists()
        with pytest.raises(PublishError, match="answered 401"):
            publish(bundles["a"], s.url, out, token="wrong-token-wrong-token")
        receipt = publish(bundles["a"], s.url, out, token=TOKEN)
        assert receipt["reference"]["max_abs_difference"] <= 1e-5


def test_publish_over_the_upload_limit_says_so(tmp_path, bundles):
    config = ServerConfig(models=tmp_path / "store", port=0, max_upload_bytes=64 * 1024)
    out = tmp_path / "receipt.json"
    with EmbeddedServer(config) as s, pytest.raises(PublishError, match="limit"):
        publish(bundles["a"], s.url, out)
    assert not out.exists()


def test_publish_to_an_unreachable_server_fails_without_receipt(bundles, tmp_path, closed_port):
    out = tmp_path / "receipt.json"
    with pytest.raises(PublishError, match=f"cannot reach http://127.0.0.1:{closed_port}/v2"):
        publish(bundles["a"], f"http://127.0.0.1:{closed_port}", out)
    assert not out.exists()


def test_publish_waits_for_a_server_still_starting(bundles, tmp_path, closed_port):
    """The workflow's publish step may run before rootml run's embedded server is up (a
    resumed run reaches it in a second): with ``wait`` it is given time to come up; without,
    a refused connection is an error at once (test above)."""
    server = EmbeddedServer(ServerConfig(models=tmp_path / "store", port=closed_port))
    out = tmp_path / "receipt.json"
    later = threading.Timer(1.5, server.start)
    t0 = time.monotonic()
    later.start()
    try:
        receipt = publish(bundles["a"], server.url, out, wait=60)
    finally:
        later.join()
        server.stop()
    assert time.monotonic() - t0 >= 1.5
    assert receipt["reference"]["max_abs_difference"] <= 1e-5
    assert out.is_file()


# ------------------------------------------------------------------ the Go TFaaS API shape


class GoTFaaSStub:
    """Only what the Go TFaaS offers (notes/tfaas.md §2): ``POST /upload`` with the tarball as
    the body (gunzipped only under ``Content-Encoding: gzip``; the model name is the top-level
    folder; empty 200 reply), ``GET /models`` (``null`` when empty), ``POST /json`` with one
    row (``keys`` ignored, ``null`` decoded as 0 as Go does for a float32), no ``/v2``."""

    def __init__(self, root: Path, *, tamper: float = 0.0) -> None:
        self.root = root
        self.tamper = tamper
        self.seen: list[dict] = []
        self.sessions: dict = {}
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _reply(self, status: int, body: bytes = b"") -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == "/models":
                    models = [
                        json.loads(p.read_text()) for p in sorted(stub.root.glob("*/params.json"))
                    ]
                    self._reply(200, json.dumps(models or None).encode())
                else:
                    self._reply(404, b"404 page not found\n")

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                stub.seen.append({"path": self.path, "headers": dict(self.headers)})
                if self.path == "/upload":
                    if self.headers.get("Content-Encoding") == "gzip":
                        body = gzip.decompress(body)
                    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
                        tar.extractall(stub.root, filter="data")
                    self._reply(200)
                elif self.path == "/json":
                    doc = json.loads(body)
                    import onnxruntime as ort

                    name = doc["model"]
                    if name not in stub.sessions:
                        stub.sessions[name] = ort.InferenceSession(
                            str(stub.root / name / "model.onnx")
                        )
                    session = stub.sessions[name]
                    row = np.array([[0.0 if v is None else v for v in doc["values"]]], np.float32)
                    out = session.run(None, {session.get_inputs()[0].name: row})[0][0] + stub.tamper
                    self._reply(200, json.dumps(out.tolist()).encode())
                else:
                    self._reply(404, b"404 page not found\n")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_publish_against_the_go_tfaas_api_shape(bundles, tmp_path):
    (tmp_path / "models").mkdir()
    out = tmp_path / "receipt.json"
    with GoTFaaSStub(tmp_path / "models") as stub:
        receipt = publish(bundles["a"], stub.url, out, name="go_model")
    assert receipt["server"] == "tfaas"
    assert receipt["reference"]["max_abs_difference"] <= 1e-5
    assert "the Go TFaaS reads null as 0" in receipt["reference"]["missing_values"]
    upload = next(s for s in stub.seen if s["path"] == "/upload")
    assert upload["headers"]["Content-Encoding"] == "gzip"
    assert (tmp_path / "models" / "go_model" / "saved_model.pb").exists()
    rows = [s for s in stub.seen if s["path"] == "/json"]
    assert len(rows) == receipt["reference"]["rows"]  # one row per request


def test_publish_detects_wrong_predictions(bundles, tmp_path):
    (tmp_path / "models").mkdir()
    out = tmp_path / "receipt.json"
    with (
        GoTFaaSStub(tmp_path / "models", tamper=1e-3) as stub,
        pytest.raises(PublishError, match="serves other predictions than the bundle"),
    ):
        publish(bundles["a"], stub.url, out)
    assert not out.exists()


# ------------------------------------------------------------------ the console script


def rootml(*args, env=None, ok=True):
    proc = subprocess.run(
        [ROOTML, *map(str, args)], capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    if ok and proc.returncode != 0:
        raise AssertionError(f"rootml {args} failed:\n{proc.stderr}")
    return proc


@pytest.fixture
def served_cli(tmp_path):
    """``rootml serve`` as a user starts it, on a free loopback port, with a token."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    port = free_port()
    proc = subprocess.Popen(
        [ROOTML, "serve", "--models", str(tmp_path / "store"), "--port", str(port),
         "--token-file", str(token_file)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url + "/v2/health/ready", timeout=1):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"rootml serve did not start:\n{proc.stderr.read()}") from None
            time.sleep(0.1)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        proc.stderr.close()


def test_cli_publish_models_predict_and_delete(served_cli, bundles, tmp_path):
    env = {"SERVE_TOKEN": TOKEN}
    out = tmp_path / "receipt.json"
    proc = rootml("publish", "--bundle", bundles["a"], "--url", served_cli, "--name", "cli_model",
                  "--token-env", "SERVE_TOKEN", "--out", out, env=env)  # fmt: skip
    summary = json.loads(proc.stdout)
    assert summary["reference"]["max_abs_difference"] <= 1e-5
    assert json.loads(out.read_text())["name"] == "cli_model"
    listed = json.loads(rootml("models", "--url", served_cli).stdout)
    assert [m["name"] for m in listed] == ["cli_model"]

    files = bundles["files"][:1]
    remote, local = tmp_path / "remote.json", tmp_path / "local.json"
    rootml("predict", "--bundle", bundles["a"], *files, "--url", served_cli,
           "--name", "cli_model", "--out", remote)  # fmt: skip
    rootml("predict", "--bundle", bundles["a"], *files, "--out", local)
    [got], [want] = json.loads(remote.read_text()), json.loads(local.read_text())
    assert got["entry"] == want["entry"]
    np.testing.assert_allclose(got["scores"], want["scores"], atol=1e-5)

    refused = rootml("delete", "cli_model", "--url", served_cli, ok=False)
    assert refused.returncode == 1
    assert "answered 401" in refused.stderr
    rootml("delete", "cli_model", "--url", served_cli, "--token-env", "SERVE_TOKEN", env=env)
    assert json.loads(rootml("models", "--url", served_cli).stdout) == []
    missing = rootml("publish", "--bundle", bundles["a"], "--url", served_cli,
                     "--token-env", "NO_SUCH_VAR", "--out", out, ok=False)  # fmt: skip
    assert missing.returncode == 1
    assert "NO_SUCH_VAR" in missing.stderr

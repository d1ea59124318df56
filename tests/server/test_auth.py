"""Bearer tokens and the bind rule (:mod:`rootml.server.auth`): every mutation needs the
token, and a non-loopback address without one is refused, by the library and the CLI."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytestmark = [
    pytest.mark.tensorflow,
    pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs TensorFlow"),
]

from rootml.exceptions import ConfigError
from rootml.server import auth as auth_module
from rootml.server.auth import check_bind

from .helpers import TOKEN, make_client, tarball


def test_token_is_required_for_every_mutation(tmp_path, token_file, bundles, monkeypatch):
    compared = []
    real = auth_module.hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth_module.hmac, "compare_digest", spy)
    body = tarball(bundles["a"])
    good = {"Authorization": f"Bearer {TOKEN}"}
    with make_client(tmp_path, token_file=token_file) as c:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            calls = [
                c.post("/upload", content=body, headers=headers),
                c.request("DELETE", "/delete/m", headers=headers),
                c.request("DELETE", "/delete", params={"model": "m"}, headers=headers),
                c.post("/params", json={"name": "m"}, headers=headers),
            ]
            for reply in calls:
                assert reply.status_code == 401, reply.text
                assert reply.headers["www-authenticate"].startswith("Bearer")
                assert reply.json()["error"]
        assert compared  # the wrong token went through the constant-time comparison
        assert c.get("/models").json() == []
        assert c.post("/upload", content=body, headers=good).status_code == 200
        assert c.post("/params", json={"name": "m"}, headers=good).status_code == 200
        assert c.get("/models").status_code == 200  # reads stay open
        assert c.delete("/delete/m", headers=good).status_code == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "example.org"])
def test_non_loopback_bind_without_token_is_refused(host):
    with pytest.raises(ConfigError, match=r"refusing to serve on .* without a token"):
        check_bind(host, None)
    check_bind(host, TOKEN)
    for loopback in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        check_bind(loopback, None)


def test_cli_refuses_public_bind_without_token(tmp_path):
    rootml = shutil.which("rootml", path=str(Path(sys.executable).parent)) or "rootml"
    proc = subprocess.run(
        [rootml, "serve", "--models", str(tmp_path / "s"), "--host", "0.0.0.0", "--port", "1"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "refusing to serve on 0.0.0.0 without a token" in proc.stderr
    assert "--token-file" in proc.stderr

"""schemathesis (a third-party OpenAPI fuzzer) against a real `rootml serve` on 127.0.0.1
with a model, with and without a token: every check passes (tests/server/schemathesis.toml
says which operations' valid bodies no schema can describe)."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytestmark = [
    pytest.mark.tensorflow,
    pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs TensorFlow"),
    pytest.mark.skipif(
        importlib.util.find_spec("schemathesis") is None, reason="needs schemathesis"
    ),
]

from rootml.server import EmbeddedServer, ServerConfig

from .helpers import TOKEN, make_client, tarball

CONFIG = Path(__file__).with_name("schemathesis.toml")


def _schemathesis() -> list[str]:
    found = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "schemathesis.cli"]


@pytest.mark.parametrize("with_token", [False, True], ids=["no-token", "token"])
def test_schemathesis_finds_no_failure(tmp_path, bundles, token_file, with_token):
    options = {"token_file": token_file} if with_token else {}
    with make_client(tmp_path, **options) as c:
        auth = {"Authorization": f"Bearer {TOKEN}"} if with_token else {}
        assert c.post("/upload", content=tarball(bundles["a"]), headers=auth).status_code == 200
    config = ServerConfig(models=tmp_path / "store", port=0, **options)
    with EmbeddedServer(config) as server:
        command = [
            *_schemathesis(), "--config-file", str(CONFIG), "run", f"{server.url}/openapi.json",
            "--seed", "7", "--no-color",  # every check: the default; the config turns one off
            *(["--header", f"Authorization: Bearer {TOKEN}"] if with_token else []),
        ]  # fmt: skip
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path,
            env=dict(os.environ, SCHEMATHESIS_HOOKS=""),
        )  # fmt: skip
    tail = (done.stdout + done.stderr)[-6000:]
    assert done.returncode == 0, tail
    selected = re.search(r"Selected: (\d+)/(\d+)", tail)
    assert selected, tail
    assert selected[1] == selected[2], "some operations were left out"
    assert f"Tested: {selected[1]}" in tail, tail  # every operation was exercised

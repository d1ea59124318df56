"""Fixtures of the server tests: the trained bundles (once per session), in-process clients
and a token file."""

from __future__ import annotations

import pytest

from .helpers import TOKEN, make_client, tarball, trained_bundles


@pytest.fixture(scope="session")
def bundles(tmp_path_factory) -> dict:
    """Bundles ``a`` and ``b`` (one layout, seeds 1 and 2) and the sample ``files``."""
    return trained_bundles(tmp_path_factory.getbasetemp() / "serve-bundles")


@pytest.fixture
def client(tmp_path):
    """A TestClient over an empty store in ``tmp_path / "store"``."""
    with make_client(tmp_path) as c:
        yield c


@pytest.fixture
def served(client, bundles):
    """A client with bundle A uploaded as model 'm'."""
    reply = client.post("/upload", content=tarball(bundles["a"]))
    assert reply.status_code == 200, reply.text
    return client


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path

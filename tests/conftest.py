"""Shared fixtures: small seeded ROOT files and real loopback servers (HTTP, XRootD)."""

from __future__ import annotations

import os
import pwd
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from rootfiles import write_shapes
from servers import FileHTTPServer, XRootDServer, free_port, make_xrootd_dirs

# ---------------------------------------------------------------------------------------------
# ROOT files written by the tests


@pytest.fixture
def events_ttree(tmp_path: Path) -> Path:
    """A local file holding the TTree ``events`` (see :func:`rootfiles.write_shapes`)."""
    return write_shapes(tmp_path / "events_ttree.root", "ttree")


@pytest.fixture
def events_rntuple(tmp_path: Path) -> Path:
    """A local file holding the RNTuple ``events`` (see :func:`rootfiles.write_shapes`)."""
    return write_shapes(tmp_path / "events_rntuple.root", "rntuple")


# ---------------------------------------------------------------------------------------------
# loopback servers


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[FileHTTPServer]:
    """An HTTP server on 127.0.0.1 serving ``.root`` (a fresh folder) with byte ranges.

    Set ``http_server.faults["fail_next"] = 2`` for two 503s, ``faults["truncate"] = N`` to
    cut whole-file bodies after N bytes. Fails the test if a handler raised.
    """
    root = tmp_path / "www"
    root.mkdir()
    with FileHTTPServer(root) as server:
        yield server
    assert not server.errors, f"the HTTP test server failed: {server.errors!r}"


@pytest.fixture(scope="session")
def xrootd_server() -> Iterator[XRootDServer]:
    """An ``xrootd`` daemon on 127.0.0.1 exporting ``.root``; ``.url(rel)`` gives
    ``root://127.0.0.1:PORT//abs/path``. Skips when the binary is missing (install it with
    ``scripts/install-test-deps.sh``)."""
    if shutil.which("xrootd") is None:
        pytest.skip(
            "xrootd is not installed: run scripts/install-test-deps.sh "
            "(needs root and apt-get) or install Debian's xrootd-server"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("nobody")
        except KeyError:
            pytest.skip("running as root without a 'nobody' user to run xrootd as")
    base, root, workdir = make_xrootd_dirs()
    try:
        with XRootDServer(root, workdir) as server:
            yield server
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening: connecting is refused at once."""
    return free_port()


# ---------------------------------------------------------------------------------------------
# a trained bundle (TensorFlow tests only: the fixtures import nothing until one asks)


@pytest.fixture(scope="session")
def data(tmp_path_factory):
    """(layout, shard paths, ROOT files) of a small two-class sample."""
    from trained import make_data

    return make_data(tmp_path_factory.mktemp("train"))


@pytest.fixture(scope="session")
def bundle(data, tmp_path_factory):
    """The bundle ``rootml train`` writes for ``data`` with the sample's model.py."""
    from trained import FAST

    from rootml.training import train

    layout, shards, files = data
    model = files[0].parent / "inputs" / "model.py"
    return train(
        layout,
        shards,
        tmp_path_factory.mktemp("bundle") / "b",
        model_path=model,
        options=FAST,
        name="sample_model",
    )

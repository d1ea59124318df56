"""Shared fixtures: small seeded ROOT files and real loopback servers (HTTP, XRootD)."""

from __future__ import annotations

import os
import pwd
import shutil
from collections.abc import Iterator
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot
from servers import FileHTTPServer, XRootDServer, free_port, make_xrootd_dirs

# ---------------------------------------------------------------------------------------------
# ROOT files written by the tests


def write_events(path: str | Path, kind: str = "ttree", *, n: int = 500, seed: int = 1) -> Path:
    """Write a small seeded file with one tree ``events`` (a TTree, or an RNTuple when
    ``kind="rntuple"``) and return its path.

    TTree branches: ``met`` (float32), ``njet`` (int32), ``nJet`` + ``Jet_pt``/``Jet_eta``
    (jagged float32), ``p3`` (float32[3]) and ``m2`` (float32[2][2], unsupported).
    RNTuple fields: ``met``, ``Jet`` (a list of {pt, eta} records, read as ``Jet.pt`` and
    ``Jet.eta``), ``hits`` (list of lists, unsupported) and ``label`` (strings, unsupported).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 6, n)
    total = int(counts.sum())
    jets = ak.zip(
        {
            "pt": ak.unflatten(rng.exponential(30.0, total).astype(np.float32), counts),
            "eta": ak.unflatten(rng.normal(0.0, 2.0, total).astype(np.float32), counts),
        }
    )
    met = rng.exponential(50.0, n).astype(np.float32)
    with uproot.recreate(path) as f:
        if kind == "ttree":
            data = {
                "met": met,
                "njet": counts.astype(np.int32),
                "Jet": jets,
                "p3": rng.normal(size=(n, 3)).astype(np.float32),
                "m2": rng.normal(size=(n, 2, 2)).astype(np.float32),
            }
            types = {
                "met": "float32",
                "njet": "int32",
                "Jet": jets.type.content,
                "p3": np.dtype((np.float32, (3,))),
                "m2": np.dtype((np.float32, (2, 2))),
            }
            f.mktree("events", types).extend(data)
        elif kind == "rntuple":
            f["events"] = {
                "met": met,
                "Jet": jets,
                "hits": ak.unflatten(jets.pt, np.ones(n, np.int64)),  # var * var * float32
                "label": ak.Array(["sig" if m > 50 else "bkg" for m in met]),
            }
        else:
            raise ValueError(f"kind must be 'ttree' or 'rntuple', not {kind!r}")
    return path


@pytest.fixture
def events_ttree(tmp_path: Path) -> Path:
    """A local file holding the TTree ``events`` (see :func:`write_events`)."""
    return write_events(tmp_path / "events_ttree.root", "ttree")


@pytest.fixture
def events_rntuple(tmp_path: Path) -> Path:
    """A local file holding the RNTuple ``events`` (see :func:`write_events`)."""
    return write_events(tmp_path / "events_rntuple.root", "rntuple")


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

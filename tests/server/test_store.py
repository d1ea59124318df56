"""The model store (:mod:`rootml.server.store`): staging folders of dead servers, versions on
re-upload and delete, one load for concurrent first requests, the LRU cache, preloading."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("starlette")
pytestmark = [
    pytest.mark.tensorflow,
    pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs TensorFlow"),
]

from .helpers import make_client, predict, reference, tarball


def test_a_restarted_server_removes_uploads_cut_short_by_a_dead_server(tmp_path, caplog):
    from rootml.server.store import _HOST

    staging = tmp_path / "store" / ".staging"
    staging.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        cut = staging / f"{_HOST}-{dead.pid}-{'a' * 32}"
        busy = staging / f"{_HOST}-{alive.pid}-{'b' * 32}"
        other = staging / f"otherhost-{dead.pid}-{'c' * 32}"  # a shared store's: not judged
        for entry in (cut, busy, other):
            (entry / "variables").mkdir(parents=True)
            (entry / "variables" / "data").write_bytes(b"x" * 2**20)
        with caplog.at_level("WARNING", logger="rootml.server.store"), make_client(tmp_path):
            pass
        assert not cut.exists()  # at once, not after an hour
        assert busy.exists()
        assert other.exists()
        said = [r.getMessage() for r in caplog.records if str(cut) in r.getMessage()]
        assert said
        assert f"pid {dead.pid}" in said[0]
        assert "1.0 MiB" in said[0]
    finally:
        alive.kill()
        alive.wait()


def test_reupload_serves_new_weights_at_once_and_delete(served, bundles, tmp_path):
    inputs, out_a = reference(bundles["a"])
    _, out_b = reference(bundles["b"])
    assert reference(bundles["b"])[0] == inputs  # same rows, other weights
    assert np.abs(out_a - out_b).max() > 1e-4
    np.testing.assert_allclose(predict(served, inputs), out_a, atol=1e-5)
    assert served.post("/upload", content=tarball(bundles["b"])).status_code == 200
    np.testing.assert_allclose(predict(served, inputs), out_b, atol=1e-5)
    store = tmp_path / "store"
    assert len(list((store / ".versions").iterdir())) == 1  # the old version is gone
    assert not list((store / ".staging").iterdir())
    assert served.delete("/delete/m").json() == {"deleted": "m"}
    gone = served.post("/json", json={"model": "m", "values": inputs[0]})
    assert gone.status_code == 404
    assert "no model named 'm'" in gone.json()["error"]
    assert served.delete("/delete/m").status_code == 404
    assert not list((store / ".versions").iterdir())


def test_concurrent_first_requests_load_once(client, bundles, tmp_path):
    # a folder put into the store by hand (as MLaaS4HEP's server does) is found and loaded
    shutil.copytree(bundles["a"], tmp_path / "store" / "rootml_model")
    inputs, outputs = reference(bundles["a"])
    store = client.app.state.store
    assert store.loads == 0
    body = {"model": "rootml_model", "values": inputs}
    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(lambda _: client.post("/json", json=body), range(32)))
    assert {r.status_code for r in replies} == {200}
    for r in replies:
        np.testing.assert_allclose(r.json(), outputs, atol=1e-5)
    assert store.loads == 1


def test_lru_cache_evicts_and_reloads(tmp_path, bundles):
    inputs, out_a = reference(bundles["a"])
    _, out_b = reference(bundles["b"])
    with make_client(tmp_path, cache_size=1) as c:
        c.post("/upload", content=tarball(bundles["a"], "one"))
        c.post("/upload", content=tarball(bundles["b"], "two"))
        assert c.app.state.store.cached() == ["two"]
        np.testing.assert_allclose(predict(c, inputs, "one"), out_a, atol=1e-5)
        assert c.app.state.store.cached() == ["one"]
        np.testing.assert_allclose(predict(c, inputs, "two"), out_b, atol=1e-5)


def test_models_on_disk_at_startup_are_preloaded(tmp_path, bundles):
    with make_client(tmp_path) as c:
        c.post("/upload", content=tarball(bundles["a"]))
    (tmp_path / "store" / "junk").mkdir()  # a folder without params.json: skipped, not a 500
    with make_client(tmp_path) as c:
        assert c.app.state.store.cached() == ["m"]
        assert [m["name"] for m in c.get("/models").json()] == ["m"]

"""Over a real socket on 127.0.0.1 with :class:`rootml.server.EmbeddedServer`
(:mod:`rootml.server.launch`): the body limit while a chunked upload streams, and a round
trip with re-uploads while clients keep predicting."""

from __future__ import annotations

import importlib.util
import json
import socket
import threading

import numpy as np
import pytest

pytest.importorskip("starlette")
pytestmark = [
    pytest.mark.tensorflow,
    pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs TensorFlow"),
]

from rootml.server import EmbeddedServer, ServerConfig

from .helpers import reference, store_snapshot, tarball


def test_body_limit_is_enforced_while_streaming(tmp_path):
    """Over a real socket: the 413 comes back before the client has sent the whole body."""
    limit = 64 * 1024
    config = ServerConfig(models=tmp_path / "store", port=0, max_upload_bytes=limit)
    with EmbeddedServer(config) as server:
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                b"Content-Type: application/octet-stream\r\n\r\n"
            )
            chunk = b"\0" * 16384
            sent = 0
            for _ in range(6):  # 96 KiB of chunks, never the terminating zero chunk
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
            reply = b""
            while b"}" not in reply:  # the JSON error body may come in a second segment
                data = sock.recv(65536)
                if not data:
                    break
                reply += data
            reply = reply.decode("latin-1")
        assert sent > limit
        assert reply.startswith("HTTP/1.1 413"), reply[:200]
        assert "byte limit" in reply
    assert store_snapshot(tmp_path / "store") == [".versions"]


def test_real_socket_round_trip_and_concurrent_reupload(tmp_path, bundles):
    import urllib.request

    from rootml.client import Client

    inputs, out_a = reference(bundles["a"])
    _, out_b = reference(bundles["b"])
    with EmbeddedServer(ServerConfig(models=tmp_path / "store", port=0)) as server:
        assert server.url.startswith("http://127.0.0.1:")
        client = Client(server.url)
        packed = {}
        for key in "ab":
            packed[key] = tmp_path / f"{key}.tgz"
            packed[key].write_bytes(tarball(bundles[key]))
        client.upload(packed["a"])
        np.testing.assert_allclose(
            client.predict("m", np.array(inputs, dtype=float), None), out_a, atol=1e-5
        )
        failures = []
        stop = threading.Event()

        def hammer():
            while not stop.is_set():
                try:
                    got = client.predict("m", np.array(inputs[:2], dtype=float), None)
                except Exception as err:  # noqa: BLE001  # any failure is recorded
                    failures.append(repr(err))
                    return
                if not (
                    np.allclose(got, out_a[:2], atol=1e-5) or np.allclose(got, out_b[:2], atol=1e-5)
                ):
                    failures.append(f"mixed outputs {got.tolist()}")

        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for t in threads:
            t.start()
        for key in "babab":
            client.upload(packed[key])
        stop.set()
        for t in threads:
            t.join()
        assert failures == []
        np.testing.assert_allclose(
            client.predict("m", np.array(inputs, dtype=float), None), out_b, atol=1e-5
        )
        with urllib.request.urlopen(server.url + "/v2/health/live") as reply:
            assert json.load(reply) == {"live": True}

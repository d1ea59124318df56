"""Serving speed of ``rootml serve`` on loopback, against the issue's targets.

Starts ``rootml serve`` (a subprocess on 127.0.0.1) with a small MLP bundle (the sample's
``model.py``: Dense(16) -> Dense(1)) and measures:

The default model takes 124 raw features (every branch, collections capped at their 99th
percentile); ``--narrow`` trains one on 42 (the width of TFaaS's published benchmark MLP).

1. single-row TFaaS ``POST /json`` with ``wrk`` (16 connections, ~10 s, a Lua script for
   the body): requests/s and p50/p99 latency (targets: >= 3,000 req/s, p99 <= 20 ms);
2. KServe V2 ``infer`` with 10,000-row batches, with the binary tensor extension and with
   plain JSON: rows/s (target >= 1M rows/s);
3. KServe V2 over gRPC (``--grpc-port``), the same batches as ``raw_input_contents``, the
   same number of client threads as (2): rows/s, and its ratio to the HTTP binary figure;
4. the same single row through onnxruntime in this process: calls/s, and the ratio of
   served requests/s to it (the server's overhead figure);
5. a SavedModel-only bundle as a Go TFaaS user has it (a Keras network of the same width,
   exported, params.json, no model.onnx): the upload's time (it is converted to ONNX there)
   and single-row ``/json`` with wrk, as in (1);
6. a SavedModel that is served through TensorFlow (rootml's own bundle without model.onnx:
   its NaN padding does not convert exactly), concurrent requests batched: as in (5).

Usage::

    python benchmarks/bench_serve.py [--bundle DIR] [--narrow] [--workers 2] [--seconds 10]
                                     [--no-savedmodel]

``wrk`` comes from Debian: ``apt-get install -y wrk``. Only 127.0.0.1 is contacted; every
loop is bounded in time.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

HOST = "127.0.0.1"
NAME = "bench_mlp"


NARROW = (
    "PV_npvs", "PV_z", "Pileup_nTrueInt", "rho", "HT", "MET_pt", "MET_phi", "MET_sumEt",
    "MET_significance", "MT", "Lepton_isoSum", "deltaPhi_j1j2", "mjj", "nJet",
    "Jet_pt", "Jet_eta", "Jet_phi", "Jet_mass",
)  # fmt: skip  # 14 flat + 4 jet branches x 7 jets = 42 inputs, TFaaS's benchmark width


def small_bundle(tmp: Path, narrow: bool = False) -> Path:
    """Train the sample's small MLP for one epoch on 2,000 sample events: every branch with
    jagged collections capped at their 99th percentile (124 raw features, as the tests use),
    or 42 features with ``narrow``."""
    from rootml.config import Settings
    from rootml.merging import merge
    from rootml.preprocessing import preprocess
    from rootml.sample import make_sample
    from rootml.specs import file_specs
    from rootml.training import TrainOptions, train

    sample = make_sample(tmp / "sample", 2000, seed=4)
    specs = [
        file_specs(str(f), "events", identifiers=("run", "event", "luminosityBlock"))
        for f in sample.files
    ]
    if narrow:
        settings = Settings(tree="events", selected=NARROW, jagged_cap=7)
    else:
        settings = Settings(tree="events", jagged_cap="p99")
    layout = merge(specs, settings, labels=["1", "0"])
    shards = preprocess(layout, range(len(layout["chunks"])), tmp / "shards")
    return train(
        layout,
        shards,
        tmp / "bundle",
        model_path=sample.inputs / "model.py",
        options=TrainOptions(epochs=1, patience=0),
        name=NAME,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def start_server(store: Path, port: int, workers: int, grpc_port: int) -> subprocess.Popen:
    cmd = [
        sys.executable, "-m", "rootml", "-q", "serve", "--models", str(store),
        "--host", HOST, "--port", str(port), "--workers", str(workers),
        "--grpc-port", str(grpc_port),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"rootml serve exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/v2/health/ready", timeout=1):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.terminate()
    raise SystemExit("rootml serve did not become ready in 60 s")


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def run_wrk(url: str, body: str, seconds: int, connections: int, threads: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(
            'wrk.method = "POST"\n'
            f"wrk.body = {json.dumps(body)}\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
    try:
        out = subprocess.run(
            ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency",
             "-s", lua.name, url],
            capture_output=True, text=True, check=True, timeout=seconds + 30,
        ).stdout  # fmt: skip
    finally:
        Path(lua.name).unlink()
    pct = {
        int(p): _ms(v, u)
        for p, v, u in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)$", out, re.MULTILINE)
    }
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": pct.get(50),
        "p99_ms": pct.get(99),
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(1) if errors else "none",
    }


def in_threads(client, clients: int) -> float:
    """Run ``client(i)`` in ``clients`` threads at once; the seconds until all are done."""
    started = time.monotonic()
    workers = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return time.monotonic() - started


def v2_binary(port: int, rows: np.ndarray, seconds: float, clients: int) -> float:
    data = np.ascontiguousarray(rows, dtype="<f4").tobytes()
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "inputs_input",
                    "shape": list(rows.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(data)},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    body = head + data
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(head)),
    }
    done = [0] * clients
    stop = time.monotonic() + seconds

    def client(i: int) -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=60)
        while time.monotonic() < stop:
            conn.request("POST", f"/v2/models/{NAME}/infer", body, headers)
            reply = conn.getresponse()
            payload = reply.read()
            if reply.status != 200:
                raise SystemExit(f"V2 infer answered {reply.status}: {payload[:200]!r}")
            cut = int(reply.headers["Inference-Header-Content-Length"])
            assert len(payload) - cut == 4 * len(rows)
            done[i] += len(rows)
        conn.close()

    elapsed = in_threads(client, clients)  # before sum(done): the threads fill it
    return sum(done) / elapsed


def v2_grpc(port: int, rows: np.ndarray, seconds: float, clients: int) -> float:
    """Rows/s of ModelInfer calls with ``rows`` as raw_input_contents, ``clients`` threads
    each on its own channel (the messages of rootml.server.kserve_grpc)."""
    import grpc

    from rootml.server.kserve_grpc import SERVICE, messages

    m = messages()
    request = m.ModelInferRequest(model_name=NAME)
    request.inputs.add(name="inputs_input", datatype="FP32", shape=list(rows.shape))
    request.raw_input_contents.append(np.ascontiguousarray(rows, dtype="<f4").tobytes())
    body = request.SerializeToString()
    done = [0] * clients
    stop = time.monotonic() + seconds

    def client(i: int) -> None:
        with grpc.insecure_channel(
            f"{HOST}:{port}", options=[("grpc.max_receive_message_length", -1)]
        ) as channel:
            call = channel.unary_unary(
                f"/{SERVICE}/ModelInfer",
                request_serializer=lambda raw: raw,  # serialised once, above
                response_deserializer=m.ModelInferResponse.FromString,
            )
            while time.monotonic() < stop:
                reply = call(body, timeout=60)
                assert len(reply.raw_output_contents[0]) == 4 * len(rows)
                done[i] += len(rows)

    elapsed = in_threads(client, clients)  # before sum(done): the threads fill it
    return sum(done) / elapsed


def v2_json(port: int, rows: np.ndarray, requests: int) -> float:
    body = json.dumps(
        {
            "inputs": [
                {
                    "name": "inputs_input",
                    "shape": list(rows.shape),
                    "datatype": "FP32",
                    "data": np.nan_to_num(rows).ravel().tolist(),
                }
            ]
        }
    ).encode()
    conn = http.client.HTTPConnection(HOST, port, timeout=120)
    started = time.monotonic()
    for _ in range(requests):
        conn.request("POST", f"/v2/models/{NAME}/infer", body, {"Content-Type": "application/json"})
        reply = conn.getresponse()
        reply.read()
        assert reply.status == 200, reply.status
    conn.close()
    return requests * len(rows) / (time.monotonic() - started)


def savedmodel_only(tmp: Path, dim: int) -> Path:
    """A Go-TFaaS-style upload: Keras's SavedModel export of a Dense(16) -> Dense(1) network
    taking ``dim`` inputs, a params.json naming it, no model.onnx."""
    import keras

    keras.utils.set_random_seed(5)
    net = keras.Sequential(
        [keras.Input(shape=(dim,)), keras.layers.Dense(16, activation="relu"),
         keras.layers.Dense(1, activation="sigmoid")]
    )  # fmt: skip
    folder = tmp / "tfaas_savedmodel"
    net.export(str(folder), verbose=False)
    (folder / "params.json").write_text(json.dumps({"name": "tfaas_savedmodel"}))
    return folder


def savedmodel_case(url: str, tmp: Path, bundle: Path, row, features, args) -> dict:
    """Case (6): ``bundle`` without model.onnx uploaded as ``through_tf``, then wrk."""
    from rootml.client import Client
    from rootml.publishing import pack_bundle

    copy = tmp / "through_tf"
    shutil.copytree(bundle, copy)
    (copy / "model.onnx").unlink()
    packed = tmp / "through_tf.tar.gz"
    with open(packed, "wb") as handle:
        pack_bundle(copy, "through_tf", handle)
    t0 = time.perf_counter()
    receipt = Client(url).upload(packed)
    upload_s = time.perf_counter() - t0
    body = json.dumps({"keys": features, "values": row, "model": "through_tf"})
    run_wrk(f"{url}/json", body, 2, args.connections, args.wrk_threads)  # warm-up
    out = run_wrk(f"{url}/json", body, args.seconds, args.connections, args.wrk_threads)
    out.update(upload_s=upload_s, backend=receipt.get("backend"))
    return out


def in_process(bundle: Path, row: np.ndarray, seconds: float) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(bundle / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    feed = {session.get_inputs()[0].name: row}
    names = [session.get_outputs()[0].name]
    calls = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(200):
            session.run(names, feed)
        calls += 200
    return calls / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", help="bundle folder (default: train a small MLP)")
    parser.add_argument(
        "--narrow", action="store_true", help="train on 42 features instead of all 124"
    )
    parser.add_argument("--workers", type=int, default=2, help="rootml serve worker processes")
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=10_000, help="V2 rows per request")
    parser.add_argument(
        "--no-savedmodel", action="store_true", help="skip the SavedModel-only case (5)"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk (Debian's package)")

    from rootml.client import Client
    from rootml.publishing import pack_bundle

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp_name:
        tmp = Path(tmp_name)
        bundle = Path(args.bundle) if args.bundle else small_bundle(tmp, args.narrow)
        reference = json.loads((bundle / "reference.json").read_text())
        features = json.loads((bundle / "params.json").read_text())["features"]
        row = reference["inputs"][0]
        x_row = np.array([[np.nan if v is None else v for v in row]], dtype=np.float32)
        rng = np.random.default_rng(1)
        pool = np.array(
            [[np.nan if v is None else v for v in r] for r in reference["inputs"]], np.float32
        )
        batch = pool[rng.integers(0, len(pool), args.batch)]

        port, grpc_port = free_port(), free_port()
        server = start_server(tmp / "store", port, args.workers, grpc_port)
        try:
            url = f"http://{HOST}:{port}"
            tarball = tmp / "bundle.tar.gz"
            with open(tarball, "wb") as handle:
                pack_bundle(bundle, NAME, handle)
            Client(url).upload(tarball)
            body = json.dumps({"keys": features, "values": row, "model": NAME})
            run_wrk(f"{url}/json", body, 2, args.connections, args.wrk_threads)  # warm-up
            served = run_wrk(f"{url}/json", body, args.seconds, args.connections, args.wrk_threads)
            v2_binary(port, batch, 2, 2)  # warm-up
            binary_rows = v2_binary(port, batch, args.seconds, 2)
            v2_grpc(grpc_port, batch, 2, 2)  # warm-up
            grpc_rows = v2_grpc(grpc_port, batch, args.seconds, 2)
            json_rows = v2_json(port, batch, 3)
            saved = through_tf = None
            if not args.no_savedmodel:
                folder = savedmodel_only(tmp, len(features))
                packed = tmp / "savedmodel.tar.gz"
                subprocess.run(["tar", "czf", str(packed), "-C", str(tmp), folder.name], check=True)
                t0 = time.perf_counter()
                receipt = Client(url).upload(packed)
                upload_s = time.perf_counter() - t0
                body = json.dumps({"values": row, "model": "tfaas_savedmodel"})
                run_wrk(f"{url}/json", body, 2, args.connections, args.wrk_threads)  # warm-up
                saved = run_wrk(
                    f"{url}/json", body, args.seconds, args.connections, args.wrk_threads
                )
                saved.update(upload_s=upload_s, backend=receipt.get("backend"))
                through_tf = savedmodel_case(url, tmp, bundle, row, features, args)
        finally:
            server.terminate()
            server.wait(timeout=30)
        calls = in_process(bundle, x_row, 3.0)

    print(
        f"machine: {os.cpu_count()} cores; rootml serve with {args.workers} worker(s); "
        f"model: {len(features)} raw features -> {bundle.name}"
    )
    print(
        f"/json single row, wrk -t{args.wrk_threads} -c{args.connections} -d{args.seconds}s: "
        f"{served['requests_per_s']:,.0f} req/s, p50 {served['p50_ms']:.2f} ms, "
        f"p99 {served['p99_ms']:.2f} ms, non-2xx {served['non_2xx']}, "
        f"socket errors {served['socket_errors']}   (targets >= 3,000 req/s, p99 <= 20 ms)"
    )
    print(
        f"V2 infer, {args.batch}-row batches: binary tensors {binary_rows:,.0f} rows/s "
        f"(target >= 1,000,000), JSON data {json_rows:,.0f} rows/s"
    )
    print(
        f"V2 gRPC ModelInfer, {args.batch}-row batches (raw_input_contents, 2 client threads): "
        f"{grpc_rows:,.0f} rows/s, {grpc_rows / binary_rows:.2f}x the HTTP binary figure"
    )
    if saved is not None:
        print(
            f"SavedModel-only bundle (no model.onnx), /json single row, same wrk: "
            f"{saved['requests_per_s']:,.0f} req/s, p50 {saved['p50_ms']:.2f} ms, p99 "
            f"{saved['p99_ms']:.2f} ms, non-2xx {saved['non_2xx']}; served by "
            f"{saved['backend']}, upload (with its conversion) {saved['upload_s']:.1f} s   "
            "(targets >= 3,000 req/s, p99 <= 20 ms)"
        )
    if through_tf is not None:
        print(
            f"SavedModel served through TensorFlow (rootml's bundle without model.onnx), "
            f"/json single row, same wrk: {through_tf['requests_per_s']:,.0f} req/s, p50 "
            f"{through_tf['p50_ms']:.2f} ms, p99 {through_tf['p99_ms']:.2f} ms, non-2xx "
            f"{through_tf['non_2xx']}; served by {through_tf['backend']}   (targets >= 3,000 "
            "req/s, p99 <= 20 ms)"
        )
    print(f"onnxruntime in-process, same row: {calls:,.0f} calls/s")
    print(
        f"overhead figure: served req/s / in-process calls/s = "
        f"{served['requests_per_s'] / calls:.3f} "
        f"({1e6 / served['requests_per_s'] - 1e6 / calls:.0f} us of HTTP+JSON per request)"
    )


if __name__ == "__main__":
    main()

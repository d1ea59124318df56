"""A bounded soak of ``rootml serve`` on 127.0.0.1: concurrent uploads, re-uploads, deletes
and predictions, checked against the model version current at each moment.

Two bundles of one layout with different weights (A and B) are uploaded, re-uploaded and
deleted under several names by competing writer threads (two per name), while reader
threads ask for predictions of the bundles' reference rows. Every reply must be:

- 200 with exactly A's or B's reference outputs, and that version must have been current at
  some moment between the request being sent and its reply (a version whose upload
  overlapped the request counts), or
- 404 while the name was deleted (or being deleted).

Anything else (a 5xx, a mixed or stale answer, any other status) is a failure. The server's
resident memory (all its processes) is read after a warm-up and at the end; it must stay
within 10%.

Usage::

    python benchmarks/soak_serve.py [--seconds 60] [--workers 2] [--readers 4] [--names 3]
        [--writers 2]

Exit status 0 when every check passed. Only 127.0.0.1 is contacted; the run stops by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HOST = "127.0.0.1"
TOLERANCE = 1e-5


def two_bundles(tmp: Path) -> tuple[Path, Path]:
    """Train the sample's small MLP twice (seeds 1 and 2) on one layout."""
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
    layout = merge(specs, Settings(tree="events", jagged_cap="p99"), labels=["1", "0"])
    shards = preprocess(layout, range(len(layout["chunks"])), tmp / "shards")
    return tuple(  # type: ignore[return-value]
        train(
            layout,
            shards,
            tmp / key,
            model_path=sample.inputs / "model.py",
            options=TrainOptions(epochs=1, patience=0, seed=seed),
        )
        for key, seed in (("a", 1), ("b", 2))
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo.extend(int(c) for c in (task / "children").read_text().split())
    return out


def rss_bytes(pid: int) -> int:
    total = 0
    for p in descendants(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


@dataclass
class Timeline:
    """One name's mutations: (start, end, state after) with state 'a', 'b' or 'gone'."""

    changes: list[tuple[float, float, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def allowed(self, sent: float, received: float) -> set[str]:
        """The states the name can have had while a request sent at ``sent`` was answered
        by ``received``. A change takes effect at some moment between its start and end; a
        change is ruled out when another one surely took effect after it and before
        ``sent`` (it started after the first ended, and ended before ``sent``)."""
        with self.lock:
            changes = list(self.changes)
        done = [start for start, end, _ in changes if end <= sent]
        latest = max(done, default=float("-inf"))
        allowed = {state for start, end, state in changes if start < received and end > latest}
        return allowed if done else allowed | {"gone"}


def request(conn: http.client.HTTPConnection, method: str, path: str, body: bytes, headers: dict):
    conn.request(method, path, body, headers)
    reply = conn.getresponse()
    return reply.status, reply.read()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="soak duration")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before the first RSS")
    parser.add_argument("--workers", type=int, default=2, help="rootml serve worker processes")
    parser.add_argument("--readers", type=int, default=4, help="prediction threads")
    parser.add_argument("--names", type=int, default=3, help="model names")
    parser.add_argument("--writers", type=int, default=2, help="writer threads per name")
    parser.add_argument("--bundles", nargs=2, metavar=("A", "B"), help="two bundles of one layout")
    args = parser.parse_args()

    from rootml.publishing import pack_bundle

    with tempfile.TemporaryDirectory(prefix="soak-serve-") as tmp_name:
        tmp = Path(tmp_name)
        paths = [Path(p) for p in args.bundles] if args.bundles else list(two_bundles(tmp))
        refs = [json.loads((p / "reference.json").read_text()) for p in paths]
        if refs[0]["inputs"] != refs[1]["inputs"]:
            raise SystemExit("the two bundles must share their reference rows (same layout)")
        expected = {k: np.asarray(r["outputs"]) for k, r in zip("ab", refs, strict=True)}
        if np.abs(expected["a"] - expected["b"]).max() < 1e-4:
            raise SystemExit("the two bundles give the same outputs; train with other seeds")
        names = [f"soak_{i}" for i in range(args.names)]
        tarballs = {}
        for name in names:
            for key, path in zip("ab", paths, strict=True):
                buf = io.BytesIO()
                pack_bundle(path, name, buf)
                tarballs[name, key] = buf.getvalue()

        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "rootml", "-q", "serve", "--models", str(tmp / "store"),
             "--host", HOST, "--port", str(port), "--workers", str(args.workers)],
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://{HOST}:{port}/v2/health/ready", timeout=1):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("rootml serve did not start") from None
                time.sleep(0.2)

        timelines = {name: Timeline() for name in names}
        statuses: Counter = Counter()
        failures: list[str] = []
        counts = Counter()
        stop = threading.Event()
        body_rows = json.dumps({"values": refs[0]["inputs"]})

        def writer(name: str, seed: int) -> None:
            rng = random.Random(seed)
            conn = http.client.HTTPConnection(HOST, port, timeout=120)
            while not stop.is_set():
                if rng.random() < 0.25:
                    method, path, body, new = "DELETE", f"/delete/{name}", b"", "gone"
                else:
                    new = rng.choice("ab")
                    method, path, body = "POST", "/upload", tarballs[name, new]
                timeline = timelines[name]
                start = time.monotonic()
                pending = (start, float("inf"), new)
                with timeline.lock:  # pending until the reply: readers may see either state
                    timeline.changes.append(pending)
                status, payload = request(conn, method, path, body, {})
                end = time.monotonic()
                statuses[status] += 1
                with timeline.lock:
                    timeline.changes.remove(pending)
                    if status == 200:
                        timeline.changes.append((start, end, new))
                if status == 404 and method == "DELETE":
                    continue  # the other writer deleted it first
                if status != 200:
                    failures.append(f"{method} {path} answered {status}: {payload[:200]!r}")
                    continue
                counts["deletes" if new == "gone" else "uploads"] += 1
                time.sleep(rng.uniform(0.0, 0.3))
            conn.close()

        def reader(seed: int) -> None:
            rng = random.Random(seed)
            conn = http.client.HTTPConnection(HOST, port, timeout=120)
            while not stop.is_set():
                name = rng.choice(names)
                body = body_rows[:-1] + f', "model": "{name}"}}'
                sent = time.monotonic()
                status, payload = request(
                    conn, "POST", "/json", body.encode(), {"Content-Type": "application/json"}
                )
                received = time.monotonic()
                statuses[status] += 1
                counts["predictions"] += 1
                if status == 200:
                    got = np.asarray(json.loads(payload))
                    seen = {
                        k for k, v in expected.items()
                        if got.shape == v.shape and np.abs(got - v).max() <= TOLERANCE
                    }  # fmt: skip
                    seen = seen or {"neither"}
                elif status == 404:
                    seen = {"gone"}
                else:
                    failures.append(f"/json for {name} answered {status}: {payload[:200]!r}")
                    continue
                allowed = timelines[name].allowed(sent, received)
                if not seen & allowed:
                    failures.append(
                        f"/json for {name} gave {sorted(seen)} while only {sorted(allowed)} "
                        f"was current ({sent:.3f}-{received:.3f})"
                    )
            conn.close()

        threads = [
            threading.Thread(target=writer, args=(n, 10 * i + j))
            for i, n in enumerate(names)
            for j in range(args.writers)
        ]
        threads += [threading.Thread(target=reader, args=(100 + i,)) for i in range(args.readers)]
        started = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(min(args.warmup, args.seconds / 2))
        rss_start = rss_bytes(server.pid)
        time.sleep(max(0.0, args.seconds - (time.monotonic() - started)))
        rss_end = rss_bytes(server.pid)
        stop.set()
        for t in threads:
            t.join(timeout=120)
        elapsed = time.monotonic() - started
        server.terminate()
        server.wait(timeout=30)

    five = sum(n for s, n in statuses.items() if s >= 500)
    growth = rss_end / rss_start - 1.0
    print(
        f"soak: {elapsed:.0f} s, {args.workers} worker(s), {len(names)} names x "
        f"{args.writers} writers, {args.readers} readers"
    )
    print(
        f"requests: {sum(statuses.values())} ({dict(sorted(statuses.items()))}); "
        f"uploads {counts['uploads']}, deletes {counts['deletes']}, "
        f"predictions {counts['predictions']} ({counts['predictions'] / elapsed:.0f}/s)"
    )
    print(f"5xx: {five}; wrong or stale answers: {len(failures)}")
    for line in failures[:10]:
        print("  ", line)
    print(
        f"server RSS (all processes): {rss_start / 2**20:.1f} MiB after {args.warmup:.0f} s, "
        f"{rss_end / 2**20:.1f} MiB at the end ({growth:+.1%}; limit +-10%)"
    )
    ok = five == 0 and not failures and abs(growth) <= 0.10
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

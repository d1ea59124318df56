"""rootml against MLaaS4HEP (branch uproot4, "the peer") on the same files, params and model.

Each repeat of a case runs the peer (in a fresh empty folder) and then ``rootml run --mlaas4hep``
on the same MLaaS4HEP folder, per engine: whole-process wall (timed here), CPU and peak RSS
(``os.wait4``), time to a trained model, fit seconds (the same passes over each event: the peer
fits every chunk ``epochs`` times) and AUCs on the same events. Cases (``rootml sample``, seeded):
A, 12k events in 4 files, the seed's params and 128-64-1 model; B10k and B100k, 2 x 200k events,
a 16-1 MLP, batch 256, chunk_size 10000 / 100000. The peer never scores a test set: its
SavedModel is scored here, in its own interpreter, on rootml's test split, its rows rebuilt from
its global-specs.json and checked against its own reader; as it fits 64% of every chunk, AUCs
are also given on the test events it did not fit (its splits replayed from its log).

    python benchmarks/bench_vs_mlaas4hep.py --peer-dir /tmp/peer/mlaas4hep \\
        --peer-python /tmp/peer/venv/bin/python [--repeats 3] [--cases A B10k B100k] \\
        [--engines local docker] [--out DIR] [--events-a 12000] [--events-b 400000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOTML = str(Path(sys.executable).parent / "rootml")
IMAGES = ("rootml/data:0.1.0", "rootml/train:0.1.0", "rootml/publish:0.1.0")
WORKFLOW = "src/python/MLaaS4HEP/workflow.py"
PAGE = os.sysconf("SC_PAGE_SIZE")
KINDS = ("signal", "background")
SETUP = """the peer (MLaaS4HEP, branch uproot4) cannot run: {why}
Set it up as ../shared/notes/peer-setup.md (beside this repository) says:
  fetch github:vkuznet/MLaaS4HEP                  # the search tool's fetch: a bare git dir MIRROR
  mkdir -p /tmp/peer/mlaas4hep && git -C "$MIRROR" archive uproot4 | tar -x -C /tmp/peer/mlaas4hep
  python3 -m venv /tmp/peer/venv && /tmp/peer/venv/bin/pip install numpy==1.23.5 \\
      tensorflow-cpu==2.14.1 uproot==4.3.7 awkward==1.10.3 pandas==2.0.3 scikit-learn==1.3.2 psutil
then: --peer-dir /tmp/peer/mlaas4hep --peer-python /tmp/peer/venv/bin/python"""
MODEL_A = '''"""The seed's network: 128-64-1, dropout 0.5, Adam(lr=1e-3) as MLaaS4HEP writes it."""
from tensorflow import keras


def model(idim):
    net = keras.Sequential([
        keras.Input(shape=(idim,)),
        keras.layers.Dense(128, activation="relu"), keras.layers.Dropout(0.5),
        keras.layers.Dense(64, activation="relu"), keras.layers.Dropout(0.5),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    net.compile(optimizer=keras.optimizers.Adam(lr=1e-3), loss="binary_crossentropy",
                metrics=["accuracy", keras.metrics.AUC(name="auc")])
    return net
'''
MODEL_B = '''"""A 16-1 MLP."""
from tensorflow import keras


def model(idim):
    net = keras.Sequential([keras.Input(shape=(idim,)), keras.layers.Dense(16, activation="relu"),
                            keras.layers.Dense(1, activation="sigmoid")])
    net.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return net
'''
PARAMS = {
    "nevts": -1, "shuffle": True, "branch": "events", "epochs": 5, "redirector": "",
    "identifier": ["run", "event", "luminosityBlock"], "selected_branches": [], "exclude_branches": [],
}  # fmt: skip
CASES = {  # name: (data set, chunk_size, batch_size, model.py, model in words)
    "A": ("A", 10_000, 100, MODEL_A, "128-64-1 dropout 0.5"),
    "B10k": ("B", 10_000, 256, MODEL_B, "16-1"),
    "B100k": ("B", 100_000, 256, MODEL_B, "16-1"),
}

# run by the peer's interpreter (job file in argv[1]): its rows for rootml's test events and for
# its own last validation split (replayed from its log, as are the events its splits fitted), its
# SavedModel's scores on both, and its own reader's rows for the first events, to check ours
PEER_SCORE = r"""
import json, re, sys
import numpy as np
job = json.load(open(sys.argv[1]))
sys.path.insert(0, job["src"])
import awkward as ak, uproot
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
specs, ident = json.load(open(job["specs"])), job["identifier"]
fkeys, jkeys = [k for k in specs["fkeys"] if k not in ident], list(specs["jkeys"])
width = len(fkeys) + sum(specs["jdim"][k] for k in jkeys)
def scale(key, v):
    lo, hi = float(specs["minv"][key]), float(specs["maxv"][key])
    return v if hi == lo else (v - lo) / (hi - lo)
def rows(path, entries):
    start, stop = int(entries.min()), int(entries.max()) + 1
    arr = uproot.open(path)[job["tree"]].arrays(fkeys + jkeys, entry_start=start, entry_stop=stop)
    sel = entries - start
    cols = [scale(k, ak.to_numpy(arr[k]).astype(np.float64)[sel])[:, None] for k in fkeys]
    for k in jkeys:
        padded = ak.fill_none(ak.pad_none(arr[k][sel], specs["jdim"][k], clip=True), np.nan)
        cols.append(scale(k, ak.to_numpy(padded).astype(np.float64)))
    x = np.hstack(cols)
    x[np.isnan(x)] = 0
    return x
def matrix(names, entries):
    x = np.zeros((len(names), width))
    for name in np.unique(names):
        x[names == name] = rows(job["files"][name], entries[names == name])
    return x
ev = np.load(job["events"])
names, entries = ev["name"].astype(str), ev["entry"].astype(np.int64)
from MLaaS4HEP.reader import RootDataReader
first, n = job["files"][names[0]], job["check"]
reader = RootDataReader(first, branch=job["tree"], identifier=ident, chunk_size=n,
                        specs=job["specs"], redirector="", nan=np.nan)
ref = np.array([reader.next()[0] for _ in range(n)])
ref[np.isnan(ref)] = 0
mine = rows(first, np.arange(n))
check = float(np.max(np.abs(ref - mine))) if ref.shape == mine.shape else float("inf")
fitted, chunk, cursor, val = set(), [], {}, []
for line in open(job["log"]).read().replace("\r", "\n").splitlines():
    m = re.search(r"file <(.+?)>, going to read (\d+) events", line)
    if m:
        start = cursor.get(m.group(1), 0)
        cursor[m.group(1)] = start + int(m.group(2))
        chunk += [(m.group(1), e) for e in range(start, start + int(m.group(2)))]
    elif "x_train chunk of" in line and chunk:
        y = np.array([job["labels"][f] for f, _ in chunk])
        tv, _ = train_test_split(np.arange(len(chunk)), stratify=y, test_size=0.2,
                                 random_state=21, shuffle=True)
        tr, va = train_test_split(tv, stratify=y[tv].reshape(-1, 1).astype(np.float64),
                                  test_size=0.2, random_state=21, shuffle=True)
        fitted.update(chunk[i] for i in tr)
        chunk, val = [], [chunk[i] for i in va]
seen = np.array([(f, int(e)) in fitted for f, e in zip(names, entries)])
import tensorflow as tf
net = tf.keras.models.load_model(job["model"], compile=False)
def score(x):
    return net.predict(x.astype(np.float32), batch_size=4096, verbose=0).reshape(len(x), -1)[:, -1]
vn, ve = np.array([f for f, _ in val]), np.array([e for _, e in val])
val_auc = roc_auc_score([job["labels"][f] for f in vn], score(matrix(vn, ve)))
np.savez(job["out"], pred=score(matrix(names, entries)), seen=seen, check=check, width=width,
         val_auc=val_auc)
"""


def fail(what: str, proc: subprocess.CompletedProcess | None = None, log: Path | None = None):
    """Stop with ``what`` and the end of the failed command's output."""
    tail = (proc.stderr or "") if proc else (log.read_text() if log and log.is_file() else "")
    raise SystemExit(f"{what}\n{tail[-3000:]}")


def check_peer(peer_dir: Path, python: str) -> str:
    """The peer's TensorFlow and uproot versions; exit 2 with setup steps if it cannot run."""
    why, probe = None, None
    if not (peer_dir / WORKFLOW).is_file():
        why = f"{peer_dir / WORKFLOW} does not exist"
    elif not (Path(python).is_file() and os.access(python, os.X_OK)):
        why = f"{python} is not an executable"
    else:
        code = "import tensorflow as t, uproot as u, awkward, sklearn; print(t.__version__, u.__version__)"
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        cmd = [python, "-c", code]
        probe = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if probe.returncode:
            why = f"{python} cannot import them: {(probe.stderr.strip().splitlines() or [''])[-1]}"
    if why:
        print(SETUP.format(why=why), file=sys.stderr)
        sys.exit(2)
    return probe.stdout.strip()


def docker_problem() -> str | None:
    """Why Docker cannot run rootml's steps here, or None when it can."""
    if shutil.which("docker") is None:
        return "no docker command"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, check=False)
    if info.returncode:
        return "docker info fails: " + (info.stderr or info.stdout).strip()[-200:]
    inspect = ["docker", "image", "inspect"]
    run = [subprocess.run([*inspect, i], capture_output=True, check=False) for i in IMAGES]
    missing = [i for i, r in zip(IMAGES, run, strict=True) if r.returncode]
    return f"images missing: {', '.join(missing)}" if missing else None


def make_data(folder: Path, events: int, seeds: list[int], suffix: bool) -> list[Path]:
    """signal/background ROOT files from ``rootml sample`` (one call per seed, events split
    evenly), kept from an earlier run of this benchmark when made the same way."""
    names = [f"{kind}{i if suffix else ''}.root" for i in range(len(seeds)) for kind in KINDS]
    paths, stamp, want = [folder / n for n in names], folder / "sample.json", [events, seeds]
    if stamp.is_file() and json.loads(stamp.read_text()) == want and all(map(Path.is_file, paths)):
        return paths
    shutil.rmtree(folder, ignore_errors=True)
    for i, seed in enumerate(seeds):
        tmp = folder / f"s{i}"
        cmd = [ROOTML, "sample", "--out", str(tmp), "--events", str(events // len(seeds))]
        cmd += ["--seed", str(seed)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode:
            fail(f"{shlex.join(cmd)} failed", proc)
        for kind in KINDS:
            (tmp / f"{kind}.root").rename(folder / f"{kind}{i if suffix else ''}.root")
        shutil.rmtree(tmp)
    stamp.write_text(json.dumps(want))
    return paths


def write_case(folder: Path, files: list[Path], params: dict, model: str) -> None:
    """An MLaaS4HEP folder: files.txt (absolute paths), labels.txt, params.json, model.py."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "files.txt").write_text("".join(f"{p.resolve()}\n" for p in files))
    labels = "".join("1\n" if p.name.startswith("signal") else "0\n" for p in files)
    (folder / "labels.txt").write_text(labels)
    (folder / "params.json").write_text(json.dumps(params, indent=1) + "\n")
    (folder / "model.py").write_text(model)


def tree_rss(root: int) -> tuple[int, int]:
    """(largest process, sum over the tree) resident bytes of ``root`` and its descendants."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
            rss[int(entry.name)] = int(fields[21]) * PAGE
    sizes, todo = [], [root]
    while todo:
        pid = todo.pop()
        sizes.append(rss.get(pid, 0))
        todo += children.get(pid, [])
    return max(sizes), sum(sizes)


def timed(cmd: list[str], cwd: Path, env: dict, stdout: Path, stderr: Path) -> dict:
    """Run ``cmd``: wall (perf_counter here), CPU and ru_maxrss (``os.wait4``), and the process
    tree's RSS sampled from /proc every 0.5 s."""
    peak, done = [0, 0], threading.Event()
    with open(stdout, "w") as out, open(stderr, "w") as err:
        launched, t0 = time.time(), time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err)

        def sample() -> None:
            while not done.wait(0.5):
                one, tree = tree_rss(proc.pid)
                peak[:] = max(peak[0], one), max(peak[1], tree)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        done.set()
        sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "rc": proc.returncode, "launched": launched, "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime, "maxrss_mb": usage.ru_maxrss / 1024,
        "sampled_process_mb": peak[0] / 2**20, "sampled_tree_mb": peak[1] / 2**20,
    }  # fmt: skip


def peer_command(case: Path, run: Path, peer_dir: Path, python: str) -> tuple[list[str], dict]:
    """The peer's command line and environment for a run in the empty folder ``run``."""
    cmd = [python, str(peer_dir / WORKFLOW), f"--files={case}/files.txt"]
    cmd += [f"--labels={case}/labels.txt", f"--params={case}/params.json", "--model=model.py"]
    path = f"{peer_dir / 'src/python'}:{case}"
    return [*cmd, f"--fout={run}/model_out"], {"PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "1"}


def fitted_rows(n: int) -> int:
    """Rows the peer fits of an ``n``-row chunk: sklearn's 80/20 split (ceil for test), twice."""
    train_val = n - -(-n // 5)
    return train_val - -(-train_val // 5)


def run_peer(case: Path, run: Path, peer_dir: Path, python: str) -> dict:
    """One peer run in the fresh empty folder ``run``: times, fit seconds, its last val_auc."""
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    cmd, env = peer_command(case, run, peer_dir, python)
    res = timed(cmd, run, dict(os.environ, **env), run / "log.txt", run / "err.txt")
    if res["rc"] or not (run / "model_out").is_dir():
        fail(f"the peer failed (rc {res['rc']}) in {run}", log=run / "err.txt")
    text = (run / "log.txt").read_text().replace("\r", "\n")
    fits = [float(s) for s in re.findall(r"####Time for training: ([0-9.e+-]+)", text)]
    chunks = [int(n) for n in re.findall(r"x_train chunk of \((\d+), \d+\)", text)]
    keras_auc = re.findall(r"val_auc: ([0-9.]+)", text)
    return {
        **res, "fit_s": sum(fits), "chunks": len(chunks), "epochs": PARAMS["epochs"],
        "fit_events": sum(map(fitted_rows, chunks)) * PARAMS["epochs"], "to_bundle": res["wall"],
        "keras_val_auc": float(keras_auc[-1]) if keras_auc else None, "run_dir": str(run),
    }  # fmt: skip


def rootml_command(case: Path, workdir: Path, engine: str) -> list[str]:
    return [ROOTML, "run", "--mlaas4hep", str(case), "--engine", engine, "--workdir", str(workdir)]


def run_rootml(case: Path, workdir: Path, engine: str) -> dict:
    """One ``rootml run --mlaas4hep``: times, time to the trained bundle, fit seconds, AUC."""
    shutil.rmtree(workdir, ignore_errors=True)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="1")
    out, err = (workdir.with_name(f"{workdir.name}.{ext}") for ext in ("out", "err"))
    res = timed(rootml_command(case, workdir, engine), workdir.parent, env, out, err)
    if res["rc"]:
        fail(f"rootml run failed (rc {res['rc']}) in {workdir}", log=err)
    run = json.loads((workdir / "run.json").read_text())
    logs = [workdir / "train/_packtivity/train.run.log", *sorted(workdir.glob("train/**/*.log"))]
    text = next((p.read_text() for p in logs if p.is_file()), "")
    n_train = int(re.search(r"train: ([\d,]+) train,", text).group(1).replace(",", ""))
    fit = re.search(r"train: (\d+) epochs in ([\d.]+) s \((\d+) events/s\)", text)
    epochs, rate = int(fit.group(1)), int(fit.group(3))  # the rate is finer than the 0.1 s
    trained = dt.datetime.fromisoformat(run["steps"]["train"]["finished"]).timestamp()
    return {
        **res, "run_seconds": run["seconds"], "to_bundle": trained - res["launched"],
        "fit_s": n_train * epochs / rate if rate else float(fit.group(2)), "epochs": epochs,
        "fit_events": n_train * epochs, "steps": {n: s["seconds"] for n, s in run["steps"].items()},
        "auc": json.loads((workdir / "evaluate/report/metrics.json").read_text())["auc"],
        "workdir": str(workdir),
    }  # fmt: skip


def test_events(workdir: Path) -> dict[str, np.ndarray]:
    """rootml's test split (split 2 in its shards): file basename, entry, label."""
    import h5py

    parts = []
    for path in sorted(workdir.glob("preprocess_*/shards/*.h5")):
        with h5py.File(path, "r") as f:
            test = f["split"][:] == 2
            name = np.full(int(test.sum()), str(f.attrs["file"]))
            parts.append((name, f["entry"][:][test], f["y"][:][test]))
    return {k: np.concatenate([p[i] for p in parts]) for i, k in enumerate(("file", "entry", "y"))}


def rootml_scores(workdir: Path, events: dict) -> np.ndarray | None:
    """rootml's own test scores (evaluate/report/scores.h5) in the order of ``events``."""
    import h5py

    if not (workdir / "evaluate/report/scores.h5").is_file():
        return None
    with h5py.File(workdir / "evaluate/report/scores.h5", "r") as f:
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in f["file"][:]]
        keys = zip(names, f["entry"][:].tolist(), strict=True)
        by_key = dict(zip(keys, f["scores"][:].tolist(), strict=True))
    return np.array([by_key[k] for k in zip(events["file"], events["entry"].tolist(), strict=True)])


def score_peer(run: Path, case: Path, peer_dir: Path, python: str, events: dict) -> dict:
    """The peer's SavedModel on ``events`` and on its last val split (see PEER_SCORE)."""
    files = (case / "files.txt").read_text().split()
    labels = [int(v) for v in (case / "labels.txt").read_text().split()]
    params = json.loads((case / "params.json").read_text())
    np.savez(run / "test-events.npz", name=events["file"], entry=events["entry"])
    job = {
        "src": str(peer_dir / "src/python"), "specs": str(run / "global-specs.json"),
        "model": str(run / "model_out"), "log": str(run / "log.txt"), "tree": params["branch"],
        "identifier": params.get("identifier") or ["run", "event", "luminosityBlock"],
        "files": {Path(p).name: p for p in files}, "check": 64,
        "labels": {Path(p).name: lab for p, lab in zip(files, labels, strict=True)},
        "events": str(run / "test-events.npz"), "out": str(run / "test-scores.npz"),
    }  # fmt: skip
    (run / "score-job.json").write_text(json.dumps(job))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH="")
    cmd = [python, "-c", PEER_SCORE, str(run / "score-job.json")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode:
        fail(f"scoring the peer's model in {run} failed", proc)
    with np.load(run / "test-scores.npz") as got:
        return {k: got[k] for k in ("pred", "seen", "check", "width", "val_auc")}


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC (Mann-Whitney, ties averaged) of ``score`` for the positive label 1."""
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]
    pos = y == 1
    n1, n0 = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def median(runs: list[dict], key: str) -> float | None:
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def _f(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


ROWS = [
    ("wall s", "wall", ".1f"), ("CPU s (user+sys, waited-for tree)", "cpu", ".1f"),
    ("peak RSS MB (ru_maxrss)", "maxrss_mb", ".0f"),
    ("  sampled: largest process MB", "sampled_process_mb", ".0f"),
    ("  sampled: whole tree MB", "sampled_tree_mb", ".0f"),
    ("time to trained model s", "to_bundle", ".1f"), ("fit s", "fit_s", ".2f"),
    ("epochs (passes over each event)", "epochs", ".0f"),
    ("fit events x passes / s", "fit_rate", ".0f"),
    ("own AUC (peer: last val split)", "own_auc", ".3f"),
    ("AUC on rootml's test split", "auc_test", ".3f"),
    ("AUC, test events peer didn't fit", "auc_unseen", ".3f"),
]  # fmt: skip


def report(name: str, rec: dict) -> None:
    """The table of medians for one case, the ratios, and Docker's extra time per step."""
    peer, runs = rec["peer"], rec["rootml"]
    cols = [("peer", peer)] + [(f"rootml {e}", r) for e, r in runs.items()]
    print(f"\n== case {name}: medians of {len(peer)} run(s); {rec['describe']}")
    print(f"  {'':<34}" + "".join(f"{c:>15}" for c, _ in cols))
    for label, key, fmt in ROWS:
        print(f"  {label:<34}" + "".join(f"{_f(median(r, key), fmt):>15}" for _, r in cols))
    print(
        f"  test events: {rec['n_test']:,}, {rec['n_unseen']:,} of them not fitted by the peer; "
        f"peer rows {rec['width']} wide, equal to its own reader's to {rec['row_check']:.1e}"
    )
    p_wall, p_fit, target = median(peer, "wall"), median(peer, "fit_s"), 1.0 if name == "A" else 0.5
    for e, r in runs.items():
        wall, fit, bundle = median(r, "wall"), median(r, "fit_s"), median(r, "to_bundle")
        print(
            f"  rootml {e}/peer wall {wall / p_wall:.2f} (target <= {target}), time to bundle/peer"
            f" wall {bundle / p_wall:.2f}; fit: peer {p_fit:.2f} s, rootml {fit:.2f} s, "
            f"peer_fit/rootml_fit {p_fit / fit:.2f}"
        )
    if {"local", "docker"} <= set(runs):
        print("  container overhead per step (docker step s - local step s, medians):")
        for step in sorted(runs["docker"][0]["steps"]):
            loc = [r["steps"][step] for r in runs["local"] if step in r["steps"]]
            dock = [r["steps"][step] for r in runs["docker"] if step in r["steps"]]
            if loc and dock:
                a, b = statistics.median(loc), statistics.median(dock)
                print(f"    {step:<16} local {a:6.2f}  docker {b:6.2f}  {b - a:+6.2f}")


def repeat(tag: str, case: Path, runs_dir: Path, i: int, args: argparse.Namespace, rec: dict):
    """Repeat ``i`` of a case: the peer, then rootml per engine, then both scored."""
    p = run_peer(case, runs_dir / f"peer-{i}", args.peer_dir, args.peer_python)
    print(f"  [{tag}] peer: wall {p['wall']:.1f} s, fit {p['fit_s']:.2f} s, {p['chunks']} chunk(s)")
    for e, runs in rec["rootml"].items():
        runs.append(r := run_rootml(case, runs_dir / f"rootml-{e}-{i}", e))
        print(
            f"  [{tag}] rootml {e}: wall {r['wall']:.1f} s, bundle at {r['to_bundle']:.1f} s, "
            f"fit {r['fit_s']:.2f} s, {r['epochs']} epochs, test AUC {r['auc']:.3f}"
        )
    ev = test_events(Path(next(iter(rec["rootml"].values()))[-1]["workdir"]))
    got = score_peer(Path(p["run_dir"]), case, args.peer_dir, args.peer_python, ev)
    y, unseen, pred = ev["y"], ~got["seen"], got["pred"]
    p.update(
        auc_test=auc(y, pred), auc_unseen=auc(y[unseen], pred[unseen]),
        own_auc=float(got["val_auc"]), fit_rate=p["fit_events"] / p["fit_s"],
        row_check=float(got["check"]),
    )  # fmt: skip
    rec["peer"].append(p)
    rec.update(n_test=len(y), n_unseen=int(unseen.sum()), width=int(got["width"]))
    rec["row_check"] = max(rec.get("row_check", 0.0), p["row_check"])
    for runs in rec["rootml"].values():
        scores = rootml_scores(Path(runs[-1]["workdir"]), ev)
        runs[-1].update(
            own_auc=runs[-1]["auc"], fit_rate=runs[-1]["fit_events"] / runs[-1]["fit_s"],
            auc_test=None if scores is None else auc(y, scores),
            auc_unseen=None if scores is None else auc(y[unseen], scores[unseen]),
        )  # fmt: skip
    print(
        f"  [{tag}] peer's model: AUC {p['auc_test']:.3f} on rootml's test split, "
        f"{p['auc_unseen']:.3f} on the {int(unseen.sum()):,} of those it did not fit, "
        f"{p['own_auc']:.3f} on its own last val split (Keras printed "
        f"{_f(p['keras_val_auc'], '.3f')}); rows equal its reader's to {p['row_check']:.1e}"
    )


def run_case(name: str, out: Path, args: argparse.Namespace, engines: list[str]) -> dict:
    """Make a case's data and MLaaS4HEP folder, run its repeats, print its table."""
    data, chunk, batch, model, net = CASES[name]
    if data == "A":
        files = make_data(out / "data/A", args.events_a, [1, 2], suffix=True)
    else:
        files = make_data(out / "data/B", args.events_b, [3], suffix=False)
    params = {**PARAMS, "chunk_size": chunk, "batch_size": batch, "verbose": args.verbose}
    case, runs_dir = out / "cases" / name, out / "runs" / name
    write_case(case, files, params, model)
    events = (args.events_a if data == "A" else args.events_b) // 2 * 2
    describe = (
        f"{len(files)} files, {events:,} events, chunk {chunk}, {PARAMS['epochs']} epochs, "
        f"batch {batch}, model {net}"
    )
    cmd, env = peer_command(case, runs_dir / "peer-N", args.peer_dir, args.peer_python)
    peer_line = " ".join(f"{k}={v}" for k, v in env.items()) + " " + shlex.join(cmd)
    commands = {"peer": f"cd {runs_dir}/peer-N  (fresh, empty); {peer_line} > log.txt 2> err.txt"}
    for e in engines:
        commands[f"rootml {e}"] = shlex.join(rootml_command(case, runs_dir / f"rootml-{e}-N", e))
    print(f"\n-- case {name}: {describe}; commands:")
    for who, line in commands.items():
        print(f"  {who}: {line}")
    rec = {"describe": describe, "params": params, "commands": commands, "peer": [],
           "rootml": {e: [] for e in engines}}  # fmt: skip
    for i in range(args.repeats):
        repeat(f"{name} {i + 1}/{args.repeats}", case, runs_dir, i, args, rec)
    report(name, rec)
    return rec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--peer-dir", type=Path, required=True, help="MLaaS4HEP's uproot4 tree")
    add("--peer-python", required=True, help="its interpreter (TF 2.14, uproot 4)")
    add("--repeats", type=int, default=3)
    add("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    add("--engines", nargs="+", default=["local", "docker"], choices=["local", "docker"])
    add("--out", type=Path, help="data, runs and the JSON (default: a new temp folder)")
    add("--events-a", type=int, default=12_000, help="case A, over its 4 files")
    add("--events-b", type=int, default=400_000, help="case B, over its 2 files")
    add("--verbose", type=int, default=0, help="params.json's (>0: the peer prints Keras progress)")
    args = parser.parse_args()
    args.peer_dir = args.peer_dir.resolve()
    versions = check_peer(args.peer_dir, args.peer_python)
    out = (args.out or Path(tempfile.mkdtemp(prefix="bench-vs-mlaas4hep-"))).resolve()
    engines = sorted(set(args.engines), key=["local", "docker"].index)
    skipped = docker_problem() if "docker" in engines else None
    if skipped:
        print(f"Docker skipped: {skipped}")
        engines.remove("docker")
    if not engines:
        raise SystemExit("no engine left to run rootml with")
    print(f"peer: {args.peer_dir} (TF, uproot {versions}); {os.cpu_count()} cores; out: {out}")
    results = {"args": {k: str(v) for k, v in vars(args).items()}, "docker_skipped": skipped,
               "peer_versions": versions, "cores": os.cpu_count(), "cases": {}}  # fmt: skip
    for name in args.cases:
        results["cases"][name] = run_case(name, out, args, engines)
        (out / "bench_vs_mlaas4hep.json").write_text(json.dumps(results, indent=1, default=float))
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        "\nPeak RSS: ru_maxrss (os.wait4) is the largest single process among the command and the"
        " descendants it waited for, not a sum; it is never below this benchmark's own peak "
        f"({own:.0f} MB: a child counts its parent's pages until exec). 'sampled': /proc every "
        "0.5 s, the largest process and the whole tree's sum (shared pages counted in each). "
        "Docker: containers are not children here, so their CPU and memory are not counted.\n"
        f"raw numbers: {out / 'bench_vs_mlaas4hep.json'}"
    )


if __name__ == "__main__":
    main()

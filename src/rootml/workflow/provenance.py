"""A run's provenance manifest (``provenance.json``) and the comparison of two runs.

Written by ``rootml run`` at the end of every run: everything needed to say what produced the
results and to run it again (``rootml replay``):

- each input file as given, where it was read, its size and sha256 (from the fetch records);
- the contents of ``input.yml``, ``params.json`` and ``model.py`` as the steps saw them;
- rootml's version and, from a source checkout, its git commit;
- each step environment: the Docker image and its id, or the local interpreter, with the
  Python packages installed there and their versions;
- the workflow parameters and seed, each step's engine, image, start and end times;
- the sha256 of every output: shards, bundle files, report, metrics, receipt.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from .. import __version__
from ..exceptions import ConfigError
from ..storage import sha256_file

SCHEMA = "rootml-provenance/1"
MANIFEST = "provenance.json"
#: output folders (relative to the run folder) whose files are hashed
OUTPUTS = ("merge", "preprocess_*/shards", "train/bundle", "evaluate/report", "publish")
#: what "the same result" means: the trained weights and the test metrics
RESULTS = (
    "train/bundle/variables/variables.data-00000-of-00001",
    "train/bundle/variables/variables.index",
    "train/bundle/model.onnx",
    "evaluate/report/metrics.json",
)
_SKIP_PARTS = {"_packtivity", "_rootml"}
#: outputs that name the run folder, the server or the time, so differ between any two runs
EXPECTED_TO_DIFFER = {
    "merge/batches.yml": "names the run folder",
    "publish/receipt.json": "the server's URL and the time of publishing",
    "train/bundle/params.json": "TFaaS's 'timestamp' field",
    "train/bundle/provenance.json": "names the run folder",
    "train/bundle/model.keras": "a zip archive stamped with the time it was saved",
    "train/bundle/fingerprint.pb": "TensorFlow's SavedModel fingerprint, new at every save",
    "train/bundle/manifest.json": "the bundle's checksums, those of the two files above among them",
    "evaluate/report/report.html": "names the bundle's folder",
}

_PACKAGES = (
    "import importlib.metadata as m, json, re, sys; "
    "print(json.dumps({'python': sys.version.split()[0], 'packages': "
    "{re.sub(r'[-_.]+', '-', d.metadata['Name']).lower(): d.version "
    "for d in m.distributions()}}))"
)


def git_commit(root: Path) -> str | None:
    """The checkout's commit (with ``-dirty`` when files differ from it), or None."""
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "")


def _normal(name: str) -> str:
    """A package name as PEP 503 compares them (tensorflow_cpu is tensorflow-cpu)."""
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.cache
def local_environment() -> dict:
    """This interpreter's Python and packages, listed once per process (0.1 s each time: a warm
    interpreter lists them before forking, and every step it starts inherits the list)."""
    return {
        "interpreter": sys.executable,
        "python": sys.version.split()[0],
        "packages": {_normal(d.metadata["Name"]): d.version for d in metadata.distributions()},
    }


def record_environment(path: Path) -> None:
    """Write this interpreter's environment to ``path`` (a step's first rootml command does;
    later ones in the same step find it there)."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {**local_environment(), "rootml": __version__, "host": platform.node()}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1), "utf-8")
    tmp.replace(path)


def image_environment(image: str, image_id: str | None) -> dict:
    """The Python packages inside a step image (one short container, no network)."""
    result = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "python3",
            image,
            "-c",
            _PACKAGES,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    doc = json.loads(result.stdout) if result.returncode == 0 else {"error": result.stderr[-500:]}
    return {"image": image, "image_id": image_id, **doc}


def output_hashes(workdir: Path) -> dict[str, str]:
    hashes = {}
    for pattern in OUTPUTS:
        for folder in sorted(workdir.glob(pattern)):
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                rel = path.relative_to(workdir)
                if not _SKIP_PARTS & set(rel.parts):
                    hashes[rel.as_posix()] = sha256_file(path)
    return hashes


def _text_file(path: Path) -> dict | None:
    if not path.is_file():
        return None
    return {"sha256": sha256_file(path), "content": path.read_text("utf-8")}


STEP_FIELDS = (
    "engine", "image", "image_id", "interpreter", "started", "finished", "seconds", "status",
    "environment",
)  # fmt: skip
#: where a step's rootml records its environment, relative to the step folder
ENVIRONMENT = "_rootml/environment.json"


def manifest(
    workdir: Path,
    params: dict,
    *,
    engine: str,
    environments: dict,
    steps: dict,
    git: str | None,
) -> dict:
    """The manifest of the finished run whose stage folders are in ``workdir``."""
    from ..config import load_input

    inputs = []
    for record in sorted(workdir.glob("fetch_*/fetch.json"), key=lambda p: _index(p.parent)):
        doc = json.loads(record.read_text("utf-8"))
        inputs.append({k: doc[k] for k in ("source", "path", "size", "sha256")})
    input_yml = Path(params["input"])
    _, settings = load_input(input_yml)
    params_json = yaml_params(input_yml)
    return {
        "schema": SCHEMA,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "rootml": {"version": __version__, "git_commit": git},
        "engine": engine,
        "parameters": {k: v for k, v in params.items() if k != "tfaas_url"},
        "seed": settings.seed,
        "inputs": inputs,
        "files": {
            "input.yml": _text_file(input_yml),
            "params.json": _text_file(params_json) if params_json else None,
            "model.py": _text_file(Path(params["model"])) if params["model"] != "none" else None,
        },
        "environments": environments,
        "steps": {name: {k: s.get(k) for k in STEP_FIELDS} for name, s in steps.items()},
        "outputs": output_hashes(workdir),
    }


def yaml_params(input_yml: Path) -> Path | None:
    """The params.json an input.yml names, if any."""
    from ..config import read_yaml

    doc = read_yaml(input_yml)
    name = doc.get("params") if isinstance(doc, dict) else None
    return input_yml.parent / name if name else None


def build(workdir: Path, run_record: dict, root: Path, engine) -> dict:
    """The manifest ``rootml run`` writes: every step image's packages, the git commit."""
    if engine.name == "docker":
        environments = {
            image: image_environment(image, image_id) for image, image_id in engine.images.items()
        }
    else:
        environments = {"local": local_environment()}
    return manifest(
        workdir,
        run_record["parameters"],
        engine=engine.name,
        environments=environments,
        steps=run_record["steps"],
        git=git_commit(root),
    )


def build_in_step(run_dir: Path, params: dict) -> dict:
    """The manifest the workflow's own last step writes, on any engine (REANA included): the
    step records when rootml's plugin ran the steps, and this step's environment."""
    from . import RECORD

    steps = {}
    for path in sorted(run_dir.glob(f"*/{RECORD}")):
        doc = json.loads(path.read_text("utf-8"))
        steps[doc["name"]] = doc
    engines = {s.get("engine") for s in steps.values()}
    engine = engines.pop() if len(engines) == 1 else "external"  # REANA: no step records
    # each step recorded the environment its rootml ran in (ROOTML_STEP_ENV)
    environments = {}
    for path in sorted(run_dir.glob(f"*/{ENVIRONMENT}")):
        name = path.parent.parent.name
        environments[f"step {name}"] = json.loads(path.read_text("utf-8"))
        steps.setdefault(name, {"engine": engine})["environment"] = f"step {name}"
    return manifest(
        run_dir, params, engine=engine, environments=environments, steps=steps, git=None
    )


def _index(step_dir: Path) -> int:
    return int(step_dir.name.rsplit("_", 1)[1])


def load(path: str | Path) -> dict:
    """A manifest, checked: parses, has the schema version this rootml writes."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no such file: {path}") from None
    except ValueError as err:
        raise ConfigError(
            f"not a provenance manifest (JSON does not parse: {err})\nin file {path}"
        ) from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        found = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise ConfigError(
            f"provenance schema {found!r} is not {SCHEMA!r}, the one this rootml "
            f"{__version__} replays\nin file {path}"
        )
    for key in ("inputs", "files", "parameters", "environments", "outputs", "engine"):
        if key not in doc:
            raise ConfigError(f"the manifest has no {key!r}; it is incomplete\nin file {path}")
    return doc


def compare(old: dict, new: dict) -> dict:
    """Output files that differ, whether the results (weights, metrics) are identical, and
    the package differences between the environments of the two runs."""
    a, b = old["outputs"], new["outputs"]
    differ = sorted(k for k in a.keys() & b.keys() if a[k] != b[k])
    return {
        "identical_results": all(k in a and k in b and a[k] == b[k] for k in RESULTS),
        "results": {k: _state(a, b, k) for k in RESULTS},
        "differ": differ,
        "only_in_recorded": sorted(a.keys() - b.keys()),
        "only_in_replay": sorted(b.keys() - a.keys()),
        "environment": environment_differences(old, new),
    }


def _state(a: dict, b: dict, key: str) -> str:
    if key not in a or key not in b:
        return "missing"
    return "identical" if a[key] == b[key] else "differs"


def _environment_of(step: dict) -> str:
    if step.get("environment"):
        return step["environment"]
    return step["image"] if step.get("engine") == "docker" else "local"


def environment_differences(old: dict, new: dict) -> dict[str, list[str]]:
    """For each pair of environments that ran the same steps in the two runs (an image, or
    the local interpreter), what differs: image id, Python, package versions."""
    common = old["steps"].keys() & new["steps"].keys()
    pairs = sorted(
        {(_environment_of(old["steps"][n]), _environment_of(new["steps"][n])) for n in common}
    )
    out = {}
    for key_a, key_b in pairs:
        env_a, env_b = old["environments"].get(key_a, {}), new["environments"].get(key_b, {})
        pa = {_normal(k): v for k, v in env_a.get("packages", {}).items()}
        pb = {_normal(k): v for k, v in env_b.get("packages", {}).items()}
        changes = [
            f"{p}: {pa[p]} -> {pb[p]}" for p in sorted(pa.keys() & pb.keys()) if pa[p] != pb[p]
        ]
        for label, names in (
            ("recorded", pa.keys() - pb.keys()),
            ("replay", pb.keys() - pa.keys()),
        ):
            if names:
                changes.append(f"only in the {label} environment: {', '.join(sorted(names))}")
        if env_a.get("python") != env_b.get("python"):
            changes.insert(0, f"python: {env_a.get('python')} -> {env_b.get('python')}")
        if env_a.get("image_id") != env_b.get("image_id"):
            changes.insert(0, f"image id: {env_a.get('image_id')} -> {env_b.get('image_id')}")
        if changes:
            out[key_a if key_a == key_b else f"{key_a} -> {key_b}"] = changes
    return out

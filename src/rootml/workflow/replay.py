"""``rootml replay``: run a recorded workflow again and show that it gives the same answer.

From a run's ``provenance.json``: the same input files (refused, before anything is written,
when a local file's sha256 changed; a remote one is checked by the fetch step against the
recorded sha256), the same ``input.yml``, ``params.json`` and ``model.py`` (from the
manifest, not from wherever they live now), the same seeds, the same engine and images
(a missing image is an error). Then the outputs are compared file by file; on the CPU the
trained weights and ``metrics.json`` must be identical. Replaying on the other engine (local
vs Docker) also lists what differs between the environments, so a difference can be traced
to a package version.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import yaml

from ..exceptions import WorkflowError
from ..storage import sha256_file
from . import provenance
from .docker import image_id
from .inputs import is_remote
from .run import RunOptions, run

REPORT = "replay.json"


def check_inputs(manifest: dict) -> None:
    """Every local input still has its recorded checksum."""
    problems = []
    for item in manifest["inputs"]:
        if is_remote(item["source"]):
            continue  # downloaded again; the fetch step verifies the recorded sha256
        path = Path(item["path"])
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        digest = sha256_file(path)
        if digest != item["sha256"]:
            problems.append(f"{path}: sha256 is now {digest}, recorded {item['sha256']}")
    if problems:
        raise WorkflowError(
            "cannot replay: input files differ from the recorded run:\n  "
            + "\n  ".join(problems)
            + "\nrestore the recorded files (a replay never runs on different inputs)"
        )


def check_images(manifest: dict, engine: str) -> None:
    if engine != "docker":
        return
    images = {s["image"] for s in manifest["steps"].values() if s.get("engine") == "docker"}
    images |= {key for key in manifest["environments"] if ":" in key and "/" in key}
    missing = [
        f"{image} (recorded id {manifest['environments'].get(image, {}).get('image_id')})"
        for image in sorted(images)
        if image_id(image) is None
    ]
    if missing:
        commit = manifest["rootml"].get("git_commit") or manifest["rootml"]["version"]
        raise WorkflowError(
            f"cannot replay in Docker: image(s) {', '.join(missing)} are missing; build them "
            f"with 'make images' from rootml {commit}, or replay with --engine local"
        )


def stage_input(manifest: dict, folder: Path) -> Path:
    """The recorded input.yml, params.json and model.py, written into ``folder``."""
    files = manifest["files"]
    doc = yaml.safe_load(files["input.yml"]["content"])
    if files.get("params.json"):
        (folder / "params.json").write_text(files["params.json"]["content"], "utf-8")
        doc["params"] = "params.json"
    if files.get("model.py"):
        (folder / "model.py").write_text(files["model.py"]["content"], "utf-8")
        doc["model"] = "model.py"
    path = folder / "input.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), "utf-8")
    return path


def replay(
    manifest_path: str | Path, workdir: Path, *, engine: str | None = None, out=sys.stdout
) -> dict:
    """Replay the run recorded in ``manifest_path`` in ``workdir``; returns the comparison."""
    old = provenance.load(manifest_path)
    engine = engine or old["engine"]
    if engine not in ("local", "docker"):
        raise WorkflowError(
            f"the recorded run ran on engine {engine!r} (a REANA cluster, say); replay it here "
            "with --engine local or --engine docker"
        )
    check_inputs(old)
    check_images(old, engine)
    params = old["parameters"]
    print(
        f"replaying {manifest_path} (recorded {old['created']}, engine {old['engine']}) "
        f"with engine {engine}",
        file=out,
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="rootml-replay-") as tmp:
        input_yml = stage_input(old, Path(tmp))
        run(
            RunOptions(
                input=input_yml,
                engine=engine,
                workdir=workdir,
                name=params["name"],
                jobs=params["jobs"],
                checksums=tuple(i["sha256"] for i in old["inputs"]),
            ),
            out=out,
        )
    new = provenance.load(workdir / provenance.MANIFEST)
    result = provenance.compare(old, new)
    result.update(recorded=str(manifest_path), replay=str(workdir / provenance.MANIFEST))
    (workdir / REPORT).write_text(json.dumps(result, indent=1), "utf-8")
    print_comparison(result, out)
    return result


def print_comparison(result: dict, out) -> None:
    verdict = "IDENTICAL" if result["identical_results"] else "DIFFERENT"
    print(f"results (weights, ONNX model, metrics.json): {verdict}", file=out)
    for key, state in result["results"].items():
        print(f"  {state:<9} {key}", file=out)
    if result["differ"]:
        print(f"other files that differ ({len(result['differ'])}):", file=out)
        for key in result["differ"]:
            if key not in result["results"]:
                why = provenance.EXPECTED_TO_DIFFER.get(key)
                print(f"  {key}" + (f"  (expected: {why})" if why else ""), file=out)
    for label, keys in (
        ("only in the recorded run", result["only_in_recorded"]),
        ("only in the replay", result["only_in_replay"]),
    ):
        if keys:
            print(f"{label}: {', '.join(keys)}", file=out)
    if result["environment"]:
        print("environment differences (what may explain the above):", file=out)
        for env, changes in result["environment"].items():
            print(f"  {env}: {len(changes)} change(s)", file=out)
            for change in changes[:20]:
                print(f"    {change}", file=out)
    else:
        print("environments: the same packages, Python and images", file=out)
    out.flush()

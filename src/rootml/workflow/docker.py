"""Which engine runs the steps: a Docker engine with rootml's step images, or local processes.

``auto`` picks Docker when ``docker info`` answers and every image named in ``steps/steps.yml``
exists or builds, and local processes otherwise, saying why. From a source checkout the images
are always brought up to date first (``scripts/build-images.sh``: seconds when nothing
changed), so the containers never run older code than the checkout. Under Docker, packtivity is told not to pull (no registry is needed),
containers share the host network (to reach the embedded server on 127.0.0.1) and see the
folders of local input files read-only at the same paths.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..exceptions import WorkflowError

BUILD_SCRIPT = "scripts/build-images.sh"


@dataclass(frozen=True)
class Engine:
    name: str  # "local" or "docker"
    env: dict[str, str] = field(default_factory=dict)
    images: dict[str, str | None] = field(default_factory=dict)  # image -> id


def docker_answers(timeout: float = 15) -> bool:
    try:
        return (
            subprocess.run(
                ["docker", "info"], capture_output=True, timeout=timeout, check=False
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def step_images(root: Path) -> list[str]:
    """``image:tag`` of every environment in ``steps/steps.yml``, in file order."""
    doc = yaml.safe_load((root / "steps" / "steps.yml").read_text("utf-8"))
    return [f"{env['image']}:{env['imagetag']}" for env in doc["environments"].values()]


def inspect(image: str, template: str) -> str | None:
    """``docker image inspect --format TEMPLATE IMAGE``, or None when the image is missing."""
    result = subprocess.run(
        ["docker", "image", "inspect", "--format", template, image],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() if result.returncode == 0 else None


def image_id(image: str) -> str | None:
    return inspect(image, "{{.Id}}")


def build_images(root: Path, images: list[str], out=sys.stdout) -> None:
    """Build (or find up to date: Docker's layer cache makes that seconds) the step images
    from this source checkout, so containers run the code of this checkout."""
    script = root / BUILD_SCRIPT
    names = [image.split(":")[0].rsplit("/", 1)[-1] for image in images]
    print(
        f"step images {names}: make images (up to date in seconds when nothing changed)",
        file=out,
        flush=True,
    )
    result = subprocess.run(
        ["bash", str(script), "--no-check", *names],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise WorkflowError(
            f"'make images' failed (exit {result.returncode}):\n{result.stdout[-2000:]}"
            f"{result.stderr[-2000:]}"
        )


def user_flags() -> list[str]:
    """``docker run`` flags that make a container write files as this user (none as root)."""
    return [] if os.getuid() == 0 else ["-u", f"{os.getuid()}:{os.getgid()}"]


def docker_env(local_files: list[str]) -> dict[str, str]:
    flags = ["--network", "host", *user_flags()]
    for name in ("TFAAS_URL", "TFAAS_TOKEN"):  # the publish step's; the value stays off argv
        if name in os.environ:
            flags += ["-e", name]
    for folder in sorted({str(Path(f).parent) for f in local_files}):
        flags += ["-v", f"{folder}:{folder}:ro"]
    return {
        "PACKTIVITY_DOCKER_NOPULL": "1",
        "PACKTIVITY_DOCKER_CMD_MOD": " ".join(shlex.quote(f) for f in flags),
    }


def choose(requested: str, root: Path, run_input, out=sys.stdout) -> Engine:
    """The engine for this run (see the module docstring)."""
    if requested not in ("auto", "docker", "local"):
        raise WorkflowError(f"--engine must be auto, docker or local, got {requested!r}")
    if requested == "local":
        return Engine("local")
    if not docker_answers():
        if requested == "docker":
            raise WorkflowError(
                "--engine docker: no Docker engine answers ('docker info' failed); start one "
                "(e.g. bash scripts/start-docker.sh) or use --engine local"
            )
        print("no Docker engine answers: running the steps as local processes", file=out)
        return Engine("local")
    images = step_images(root)
    if (root / BUILD_SCRIPT).is_file():
        try:
            build_images(root, images, out)
        except WorkflowError as err:
            if requested == "docker":
                raise
            print(f"{err}\nrunning the steps as local processes instead", file=out)
            return Engine("local")
    missing = [image for image in images if image_id(image) is None]
    if missing:
        error = (
            f"the step images {missing} are missing and this installation has no "
            f"{BUILD_SCRIPT} to build them; build them from a rootml checkout with 'make "
            "images', or use --engine local"
        )
        if requested == "docker":
            raise WorkflowError(error)
        print(f"{error}\nrunning the steps as local processes instead", file=out)
        return Engine("local")
    local = [f for f in run_input.files if Path(f).is_absolute() and Path(f).exists()]
    if Path(run_input.params["model"]).is_absolute():
        local.append(run_input.params["model"])  # model/ is outside init/, which yadage mounts
    return Engine("docker", docker_env(local), {image: image_id(image) for image in images})

"""Warm containers for the Docker engine: each step still runs in a container of its own image,
but its ``rootml`` command forks from a long-lived container of that same image whose
interpreter has already imported what the command needs.

Without them every step container started a fresh Python: the train step paid TensorFlow's
import (3-5 s on 2 cores) and evaluate matplotlib, scipy and onnxruntime's (~2 s), costs the
local engine's warm interpreters (:mod:`.warm`) pay once, while the data steps run. So
``rootml run --engine docker`` starts, before yadage, warm containers of the step images
(``data``, ``publish``, and two of ``train``: one with TensorFlow for training and the model
check, one niced without it for ``features`` and ``evaluate``, so that their imports do not
slow training), each running :mod:`.warm`'s server, with the
mounts every step sees (the run's folder, the input files' folders read-only, the host
network) and a private folder holding the servers' Unix sockets and a launcher. Each step's
``docker run`` (the command line packtivity builds, :mod:`.plugin`) gets that folder mounted and first
on ``PATH``: the step's script calls ``rootml`` as before; the launcher inside the step
container finds its image in ``ROOTML_IMAGE`` (set by the image) and hands the command, its
streams and environment to the warm container of that image; the command runs there and its
exit status becomes the launcher's. When no warm container answers, the launcher starts a
fresh ``python -m rootml`` in the step container, as before.

The outputs are those of a fresh process (a Docker run's ``model.onnx`` matched the local
engine's byte for byte on the bundled sample and on the Rucio example). The containers are removed with the run; one whose ``rootml
run`` is killed stops too (its ``docker run`` client gets SIGTERM and passes it on).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shlex
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from . import warm, warmclient
from .docker import inspect

log = logging.getLogger(__name__)

#: step image family -> the warm server kinds (:data:`warm.PRELOAD`) of its containers: the
#: train image's evaluation commands need no TensorFlow, and their imports must not slow training
KINDS = {"data": ("data",), "train": ("train", "evaluate"), "publish": ("publish",)}

#: the launcher's interpreter inside an image: the image's python3, from its PATH, without site
SHEBANG = "/usr/bin/env -S python3 -S"


def kind_of(image: str) -> str | None:
    """``rootml/train:0.1.0`` -> ``train``; None for an image that is not a step image."""
    name = image.split(":", 1)[0].rsplit("/", 1)[-1]
    return name if name in KINDS else None


def image_path(image: str) -> str | None:
    """The ``PATH`` an image's containers start with (its ``ENV``), None if unknown."""
    text = inspect(image, "{{json .Config.Env}}")
    try:
        env = json.loads(text) if text is not None else None
    except ValueError:
        return None
    return next((e.split("=", 1)[1] for e in env or () if e.startswith("PATH=")), None)


try:
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl  # looked up here, not in a forked child
except (OSError, AttributeError):  # not Linux
    _PRCTL = None


def _pdeathsig() -> None:
    """In the ``docker run`` client: SIGTERM when ``rootml run`` goes, however it goes (the
    client passes it to the container, whose server then exits). Runs between fork and exec:
    one foreign call, no lock taken."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@contextlib.contextmanager
def containers(
    log_path: Path, images: list[str], workdir: Path, step_flags: str
) -> Iterator[warm.Pool]:
    """Start a warm container for each step image in ``images`` for the length of the block.

    ``step_flags`` are the ``docker run`` flags every step gets (the Docker engine's
    ``PACKTIVITY_DOCKER_CMD_MOD``: network, user, input mounts); the containers get them too,
    and :attr:`warm.Pool.env` is that variable with the warm folder added. If the images do not
    agree on ``PATH`` (the launcher must come first on it), no container starts and the steps
    start cold."""
    wanted = {kind: i for i in images if kind_of(i) for kind in KINDS[kind_of(i)]}
    paths = {image_path(i) for i in wanted.values()}
    if not wanted or len(paths) != 1 or None in paths:
        log.warning("the step images disagree on PATH (%s): steps start cold", sorted(paths))
        yield warm.Pool.none()
        return
    folder = Path(tempfile.mkdtemp(prefix="rootml-warm-"))
    bin_dir = folder / "bin"
    warm.write_launcher(bin_dir / "rootml", SHEBANG)
    env_flags = ["-e", f"{warmclient.ENV}={folder}", "-e", f"PATH={bin_dir}:{paths.pop()}"]
    shared = [*shlex.split(step_flags), "-v", f"{folder}:{folder}", *env_flags]
    stamp = f"{os.getpid()}-{folder.name.rsplit('-', 1)[-1]}".lower()
    names = {kind: f"rootml-warm-{stamp}-{kind}" for kind in wanted}
    pool = warm.Pool(folder, {}, warm.IMAGE_ROLES, names)
    try:
        with open(log_path, "ab") as out:
            for kind, image in wanted.items():
                cmd = [
                    "docker", "run", "--rm", "--init", "--name", names[kind],
                    *shared, "-v", f"{workdir}:{workdir}",
                    "-e", "TF_CPP_MIN_LOG_LEVEL=2",
                    image, "python", "-m", warm.__name__, kind, str(folder / f"{kind}.sock"),
                ]  # fmt: skip
                pool.procs[kind] = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    preexec_fn=_pdeathsig,  # noqa: PLW1509 (see _pdeathsig)
                )
        warm.wait_bound(folder, pool.procs, timeout=30.0)
        pool.env = {"PACKTIVITY_DOCKER_CMD_MOD": shlex.join(shared)}
        yield pool
    finally:
        pool.close()

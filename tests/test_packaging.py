"""The wheel is enough to run the workflow: it carries workflows/ and steps/, and
``rootml run`` finds them inside the installed package when there is no source checkout."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEC = ("workflows/main.yml", "steps/steps.yml")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    local = ROOT / "build" / "wheelhouse" / "build"  # hatchling, where make images put it
    cmd = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out)]
    if list(local.glob("hatchling-*.whl")):
        cmd += ["--no-index", "--find-links", str(local)]
    proc = subprocess.run([*cmd, str(ROOT)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (found,) = out.glob("rootml-*.whl")
    return found


def test_the_wheel_carries_the_workflow_and_its_steps(wheel):
    with zipfile.ZipFile(wheel) as z:
        for rel in SPEC:
            assert z.read(f"rootml/workflow/spec/{rel}") == (ROOT / rel).read_bytes(), rel


def test_an_installed_copy_runs_its_own_workflow_files(wheel, tmp_path):
    """Unpacked away from the checkout, spec_root() is the copy inside the package."""
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    code = "from rootml.workflow.run import spec_root; print(spec_root())"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    root = Path(proc.stdout.strip())
    assert root == site / "rootml" / "workflow" / "spec"
    for rel in SPEC:
        assert (root / rel).read_bytes() == (ROOT / rel).read_bytes(), rel

"""Shared by the benchmarks: MLaaS4HEP-comparable 52-wide rows, and the peak RSS of one
``rootml`` command as the child process itself reports it.

``ru_maxrss`` of a forked child also counts the parent's pages it shared before ``exec``,
which would measure the benchmark rather than rootml; ``VmHWM`` read by the child is its own.
"""

from __future__ import annotations

import subprocess
import sys

# 12 flat branches + Jet_pt/Jet_eta capped at 16 + Muon_pt at 8 = 52 columns, the row width
# MLaaS4HEP was measured with (notes/mlaas4hep.md section 9)
COMPARABLE_SELECTION = (
    "HT", "MET_pt", "MET_phi", "MET_sumEt", "MET_significance", "MT", "PV_npvs", "PV_z",
    "rho", "Lepton_isoSum", "deltaPhi_j1j2", "mjj", "Jet_pt", "Jet_eta", "Muon_pt",
)  # fmt: skip
COMPARABLE_CAPS = {"Jet": 16, "Muon": 8}

_CHILD = (
    "import sys; from rootml.cli import main; rc = main(sys.argv[1:]); "
    "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]; "
    "print('VmHWM', hwm, file=sys.stderr); sys.exit(rc)"
)


def peak_rss(args: list[str]) -> int:
    """Run ``rootml ARGS`` and return its peak resident set size in bytes."""
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"rootml {' '.join(args[:2])} failed:\n{proc.stderr[-3000:]}")
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("VmHWM"))
    return int(line.split()[1]) * 1024

"""Which feature scaling trains the best model: test AUC of ``rootml run`` on the samples of
``bench_padding.py``, the same events, network, padding rule and seed, only
``features.scaling`` changed:

- ``quantile`` (the default): each branch's 0.1 % and 99.9 % quantiles over all files (from
  the specs' samples, mixed by merge) map to 0 and 1, values beyond are clipped;
- ``minmax`` (MLaaS4HEP's): the exact minimum and maximum map to 0 and 1, so one outlier
  squeezes every ordinary value of the branch into a sliver of the range;
- ``standard``: mean 0, standard deviation 1, clipped at +-10.

    python benchmarks/bench_scaling.py [--scalings quantile minmax standard]
                                       [--samples bundled fourfile jagged]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_jagged_cap import SAMPLES, input_yml, run
from bench_padding import samples

SCALINGS = ["quantile", "minmax", "standard"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scalings", nargs="+", default=SCALINGS, choices=SCALINGS)
    parser.add_argument("--samples", nargs="+", default=SAMPLES, choices=SAMPLES)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="rootml-bench-scaling-"))
    table = {}
    try:
        for name, (files, labels, params, net) in samples(base, args.samples).items():
            for scaling in args.scalings:
                folder = base / f"in-{name}-{scaling}"
                path = input_yml(folder, files, labels, params, net, {"scaling": scaling})
                table[(name, scaling)], _, _ = run(path, base / f"run-{name}-{scaling}")
                print(f"{name:<9} {scaling:>9}: test AUC {table[(name, scaling)]:.4f}", flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print("\ntest AUC by scaling (same events, network and seed)")
    print(f"{'sample':<10}" + "".join(f"{s:>10}" for s in args.scalings))
    for name in args.samples:
        print(f"{name:<10}" + "".join(f"{table[(name, s)]:>10.4f}" for s in args.scalings))


if __name__ == "__main__":
    main()

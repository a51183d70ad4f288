"""Run every benchmark in turn and print their tables (the README's Performance section).

    python benchmarks/run_all.py [--budget SECONDS] [--threads N] [--quick]

--quick shortens everything (a smoke test of the scripts, not figures to quote).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=300.0,
                    help="seconds of training for each implementation in bench_quality")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="BLAS/torch threads for both implementations")
    ap.add_argument("--quick", action="store_true", help="tiny runs, to check the scripts work")
    args = ap.parse_args()
    common = ["--threads", str(args.threads)]
    jobs = [
        ("bench_train.py", ["--repeats", "3", "--configs", "1x128:32:64"] if args.quick else []),
        ("bench_sample.py", ["--chars", "50", "--repeats", "2"] if args.quick else []),
        ("bench_eval.py", ["--repeats", "1"] if args.quick else []),
        ("bench_quality.py", ["--budget", "5" if args.quick else str(args.budget)]),
    ]
    for script, extra in jobs:
        print(f"\n### {script} {' '.join(extra + common)}\n", flush=True)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, str(HERE / script), *extra, *common], check=True)
        print(f"\n({script}: {time.perf_counter() - t0:.0f} s; load after "
              f"{os.getloadavg()[0]:.2f})", flush=True)


if __name__ == "__main__":
    main()

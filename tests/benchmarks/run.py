"""Run the benchmarks: every ``bench_*.py`` here, or those named on the command line.

    python tests/benchmarks/run.py            # all (this is `make bench`)
    python tests/benchmarks/run.py bn quant   # bench_bn.py and bench_quant.py only (`make bench ONLY="bn quant"`)

Each benchmark module has a ``main() -> int`` that measures side by side in one process and prints figures and
ratios. Benchmarks are not tests: they do not pass or fail on speed, they report it. A benchmark that cannot run
(its prerequisite is missing) prints why and returns non-zero, and the runner's exit code reports that.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parent.parent)]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str]) -> int:
    names = sorted(p.stem for p in HERE.glob("bench_*.py"))
    wanted = [f"bench_{a.removeprefix('bench_')}" for a in argv] or names
    unknown = [w for w in wanted if w not in names]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(n[6:] for n in names)}")
        return 2
    failed = []
    for name in wanted:
        print(f"\n=== {name[6:]} ===", flush=True)
        start = time.perf_counter()
        rc = importlib.import_module(name).main()
        print(f"--- {name[6:]}: {'ok' if rc == 0 else f'exit {rc}'} in {time.perf_counter() - start:.0f} s", flush=True)
        if rc:
            failed.append(name[6:])
    if failed:
        print(f"\nbenchmarks that could not run: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""``python -m device_bench ARTIFACT --runtime R [--data x.npz]``: run an artifact and print metrics as JSON.

The full measurement harness (latency percentiles, memory, subprocess isolation) builds on this entry point.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def main(argv: list[str] | None = None) -> int:
    from device_bench import metrics
    from device_bench.runners import names, open_model
    from device_bench.runners.base import ArtifactError, RunnerUnavailable

    ap = argparse.ArgumentParser(prog="device_bench", description=__doc__.splitlines()[0])
    ap.add_argument("artifact")
    ap.add_argument("--runtime", required=True, choices=names())
    ap.add_argument("--data", help=".npz with preprocessed float inputs 'x' and optional labels 'y' and "
                                   "reference outputs 'ref'")
    ap.add_argument("--threads", type=int)
    args = ap.parse_args(argv)
    try:
        session = open_model(args.runtime, args.artifact, args.threads)
        result = {"runtime": session.describe()}
        if args.data:
            with np.load(args.data) as z:
                x = z["x"].astype(np.float32)
                y = z["y"] if "y" in z.files else None
                ref = z["ref"] if "ref" in z.files else None
            result["metrics"] = metrics.compare(session.run(x), ref, y)
    except (ArtifactError, RunnerUnavailable, OSError, KeyError) as exc:
        print(f"device_bench: error: {exc}", file=sys.stderr)
        return 2
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Devices: the emulated ARM64 board against this machine, and a fleet against one device after another.

1. Emulated vs native latency: the example model's fp32 and int8 TFLite, the same settings (1 thread, XNNPACK,
   the same iterations), through the local transport and the qemu-aarch64 transport; prints the ratio of medians.
2. x86 vs ARM numerics: each artifact's outputs on this machine (x86-64 LiteRT) are the reference the emulated
   ARM run is compared with on the 2,000 evaluation images: top-1 agreement, max |difference|, SQNR.
3. Fan-out: 3 ssh devices (a real sshd on 127.0.0.1, one port per device, this machine's Python as the device)
   benchmarking the same two artifacts: ``edgeprep bench --targets a,b,c`` against three single-target runs one
   after another. On a 2-core machine the lanes share the CPU, so this shows the overlap of connection, copy and
   start-up time; devices that are separate boards overlap completely.
4. ``make emulator``: its recorded build time (and the cached, up-to-date call).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from conftest import EXAMPLE_MODEL, MANIFEST, ROOT

RUNS = 30


def _artifacts(d: Path) -> dict[str, Path]:
    out = {}
    for precision in ("fp32", "int8"):
        path = d / f"example.{precision}.tflite"
        subprocess.run([sys.executable, "-m", "edgeprep", "-q", "convert", str(EXAMPLE_MODEL), "--to", "tflite",
                        "--precision", precision, "--data", str(MANIFEST), "--out", str(path)], check=True,
                       capture_output=True)
        out[precision] = path
    return out


def main() -> int:
    from device_bench.bench import Job
    from device_bench.runners import open_model
    from device_bench.transports import get_transport
    from edgeprep.devices import emulator

    rootfs = emulator.default_rootfs()
    if emulator.read_stamp(rootfs) is None:
        print(f"the ARM64 emulator is not built ({rootfs}): run 'make emulator'")
        return 1
    d = Path(tempfile.mkdtemp(prefix="bench-devices-"))
    arts = _artifacts(d)
    local, qemu = get_transport("local"), get_transport("qemu-aarch64", rootfs=str(rootfs))
    with np.load(ROOT / "calibration_data" / "fashion_mnist_eval.npz") as z:
        x, y = z["x"].astype(np.float32) / 255.0, z["y"]

    print(f"1. latency, 1 thread, XNNPACK, {RUNS} runs after 3 warm-up (median of the iterations)")
    print("| artifact | this machine (x86-64) p50 | emulated Cortex-A72 p50 | ratio |")
    print("|---|---|---|---|")
    for precision, path in arts.items():
        job = Job(str(path), "litert", threads=1, runs=RUNS, warmup=3)
        native = local.run(job, 300)["bench"]["latency_ms"]["p50"]
        emulated = qemu.run(job, 900)["bench"]["latency_ms"]["p50"]
        print(f"| tflite {precision} | {native:.4f} ms | {emulated:.2f} ms | {emulated / native:.0f}x |")

    print(f"\n2. x86 vs ARM outputs of the same artifact on {len(x)} evaluation images (x86 outputs as reference)")
    print("| artifact | top-1 agreement | max abs difference | SQNR dB | x86 top-1 | ARM top-1 |")
    print("|---|---|---|---|---|---|")
    for precision, path in arts.items():
        x86 = open_model("litert", str(path), threads=1)
        ref = x86.run(x)
        np.savez(d / f"x86.{precision}.npz", x=x, y=y, ref=ref)
        m = qemu.run(Job(str(path), "litert", threads=1, runs=1, warmup=0, data=str(d / f"x86.{precision}.npz")),
                     1800)["metrics"]
        step = f" (output step {x86.output.scale:.6g})" if x86.output.scale else ""
        print(f"| tflite {precision} | {m['agreement']:.4f} | {m['max_abs_error']:.3g}{step} | {m['sqnr_db']:.1f} "
              f"| {float(np.mean(ref.argmax(1) == y)):.4f} | {m['accuracy']:.4f} |")

    print("\n3. fan-out: 3 ssh devices, both artifacts, 3 processes x 200 runs each, 2 threads")
    sys.path.insert(0, str(ROOT / "tests"))
    import sshd

    server = sshd.SSHD(d / "sshd", ports=3)
    try:
        names = []
        for i in range(3):
            p = d / f"board{i}.toml"
            p.write_text(f'name = "board{i}"\ndescription = "d"\nformats = ["tflite"]\nprecisions = ["int8"]\n'
                         f'threads = 2\n[bench]\nruns = 200\nrepeats = 3\ntransport = "ssh"\n' + server.toml(i))
            names.append(str(p))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        cmd = [sys.executable, "-m", "edgeprep", "-q", "bench", *map(str, arts.values()), "--no-history"]
        start = time.perf_counter()
        for i, name in enumerate(names):
            subprocess.run(cmd + ["--target", name, "--out", str(d / f"seq{i}")], check=True, env=env,
                           capture_output=True)
        sequential = time.perf_counter() - start
        start = time.perf_counter()
        subprocess.run(cmd + ["--targets", ",".join(names), "--out", str(d / "fleet")], check=True, env=env,
                       capture_output=True)
        fleet = time.perf_counter() - start
        inside = json.loads((d / "fleet" / "report.json").read_text())["fleet"]
        print(f"sequential (3 x edgeprep bench --target): {sequential:.1f} s; fleet (--targets a,b,c): {fleet:.1f} s;"
              f" ratio {sequential / fleet:.2f}x; inside the fleet: wall {inside['wall_seconds']:.1f} s vs "
              f"{inside['sum_seconds']:.1f} s of device time on {inside['lanes']} lanes")
    finally:
        server.stop()

    stamp = emulator.read_stamp(rootfs)
    start = time.perf_counter()
    emulator.build(rootfs, say=lambda *_: None)
    print(f"\n4. make emulator: built in {stamp.get('build_seconds')} s ({stamp.get('built')}, {stamp.get('qemu')}); "
          f"when up to date it returns in {time.perf_counter() - start:.2f} s")
    return 0

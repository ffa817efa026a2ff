"""The qemu-aarch64 transport: device_bench inside an arm64 Debian root filesystem, run by qemu-user.

``chroot ROOTFS /usr/bin/python3 device_bench.pyz ...``: the kernel hands every arm64 binary to
``qemu-aarch64-static`` (registered with binfmt_misc), which emulates a Cortex-A72 — a Raspberry Pi 4's core,
with its instruction set and no more, so LiteRT/XNNPACK pick the kernels they would pick on the board. The
rootfs (``make emulator``; ``edgeprep.devices.emulator``) has Debian's Python and aarch64 wheels of numpy and
ai-edge-litert, and describes that CPU in ``/proc/cpuinfo`` and ``/sys/devices/system/cpu`` (nothing is mounted
into it), which is what the cpuinfo library behind XNNPACK reads.

What it is good for: accuracy, agreement and SQNR come from the real ARM kernels (the arm64 builds of numpy and
LiteRT executing instruction by instruction), so ARM-only numerical differences show up on an x86 machine.
What it is not: a speed or memory measurement. Latency under emulation is tens to hundreds of times the board's
and does not scale like it, and the peak RSS includes the emulator; results say so (``emulated: true``).

Two ways to enter the rootfs (``isolation``): ``chroot`` (root only: the emulated programs see the rootfs and
nothing else) and ``prefix`` (any user: ``qemu-aarch64-static -L ROOTFS``, where qemu looks up every absolute path
in the rootfs first, so the emulated Python finds its libraries, numpy, LiteRT and the rootfs's ``/proc/cpuinfo``;
paths the rootfs lacks fall through to this machine's files). ``auto`` (the default) takes ``chroot`` as root and
``prefix`` otherwise; both give the same outputs bit for bit (tested).

Each benchmark gets its own directory under the rootfs's ``/tmp`` (removed afterwards), so several can run at
once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

from device_bench.bench import Job
from device_bench.transports import register
from device_bench.transports.base import BenchFailed, Completed, Transport, TransportUnavailable, run_process
from device_bench.transports.bundle import BUNDLE, Payload, payload, write_tree

STAMP = ".edgeprep-emulator.json"
ISOLATIONS = ("auto", "chroot", "prefix")
QEMU = "qemu-aarch64-static"
BINFMT = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
NOT_REPRESENTATIVE = ("latency and memory were measured under qemu-user emulation on another CPU: they are not "
                      "representative of the hardware (accuracy and numerics are: real ARM kernels)")


@register("qemu-aarch64")
class QemuTransport(Transport):
    emulated = True
    copies_files = True

    def __init__(self, rootfs: str, python: str = "/usr/bin/python3", cpu: str = "cortex-a72",
                 missing_hint: str = "run 'make emulator'", isolation: str = "auto"):
        if isolation not in ISOLATIONS:
            raise TransportUnavailable(f"isolation must be one of {', '.join(ISOLATIONS)}, got {isolation!r}")
        self.rootfs = Path(rootfs)
        self.python = python
        self.cpu = cpu
        self.missing_hint = missing_hint
        self.isolation = ("chroot" if os.geteuid() == 0 else "prefix") if isolation == "auto" else isolation

    def describe(self) -> dict:
        return {"transport": self.name, "emulated": True, "emulator": "qemu-user (qemu-aarch64-static)",
                "cpu": self.cpu, "rootfs": str(self.rootfs), "isolation": self.isolation,
                "latency_representative": False, "note": NOT_REPRESENTATIVE}

    def ready(self) -> None:
        """Refuse, with what to do, when the rootfs is missing or qemu cannot run it."""
        unreadable = TransportUnavailable(f"the ARM64 emulator at {self.rootfs} is not readable by this user",
                                          "run 'make emulator' as root again (it makes the rootfs readable to all)")
        try:
            built = (self.rootfs / STAMP).is_file()
        except PermissionError:
            raise unreadable from None
        if not built:
            raise TransportUnavailable(f"the ARM64 emulator is not built: no rootfs at {self.rootfs}",
                                       self.missing_hint)
        if not os.access(self.rootfs, os.R_OK | os.X_OK):
            raise unreadable
        if self.isolation == "prefix":
            if shutil.which(QEMU) is None:
                raise TransportUnavailable(f"{QEMU} is not installed", "apt-get install qemu-user-static")
            if not os.access(self.rootfs / "tmp", os.W_OK | os.X_OK):
                raise TransportUnavailable(f"cannot write to {self.rootfs / 'tmp'}",
                                           "run 'make emulator' as root again (it makes the rootfs's /tmp "
                                           "writable to all, as on a real system)")
            return
        if os.geteuid() != 0:
            raise TransportUnavailable("the qemu-aarch64 transport's chroot isolation needs root",
                                       "run edgeprep as root, or leave isolation to auto (qemu -L for other users)")
        if not BINFMT.is_file() or not BINFMT.read_text().startswith("enabled"):
            raise TransportUnavailable("qemu-aarch64 is not registered with binfmt_misc, so arm64 programs cannot "
                                       "start", f"{self.missing_hint} (it registers it) or run "
                                                "'update-binfmts --enable qemu-aarch64'")

    def _in_rootfs(self, job: Job | None, args: Sequence[str], timeout: float) -> Completed:
        """Stage the zipapp (and the job's files) in a fresh directory of the rootfs's /tmp, run
        ``chroot ROOTFS python device_bench.pyz ARGS`` (or ``qemu-aarch64-static -L ROOTFS ROOTFS/python ...``),
        remove the directory."""
        self.ready()
        tmp_root = self.rootfs / "tmp"
        staging = Path(tempfile.mkdtemp(prefix="device-bench-", dir=tmp_root))
        inside = "/" + staging.relative_to(self.rootfs).as_posix()
        try:
            load = payload(job, prefix=inside + "/") if job else Payload((), tuple(args))
            write_tree(load, staging)
            env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "QEMU_CPU": self.cpu,
                   "HOME": "/root", "PYTHONDONTWRITEBYTECODE": "1"}
            # Through coreutils' timeout, which forks: nothing is mounted on the rootfs's /proc, so the peak RSS is
            # getrusage's ru_maxrss, which a process inherits across exec from the process it was forked from —
            # this one, with TensorFlow loaded (measured: 2.3 GB reported for a 106 MB benchmark). A child of a
            # small process starts from its small size. timeout is also a second stop at the deadline.
            wrap = [shutil.which("timeout") or "timeout", "-s", "KILL", f"{timeout + 10:g}"]
            if self.isolation == "prefix":
                # qemu opens the program itself from this machine's path; -L (QEMU_LD_PREFIX for anything the
                # emulated program would exec) makes every absolute path the program uses resolve in the rootfs.
                env["QEMU_LD_PREFIX"] = str(self.rootfs)
                enter = [shutil.which(QEMU) or QEMU, "-L", str(self.rootfs), "-cpu", self.cpu,
                         str(self.rootfs) + self.python]
            else:
                enter = [shutil.which("chroot") or "/usr/sbin/chroot", str(self.rootfs), self.python]
            return run_process([*wrap, *enter, f"{inside}/{BUNDLE}", *load.argv], timeout, env)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def execute(self, job: Job, timeout: float, wrapper: Sequence[str] = ()) -> Completed:
        if wrapper:
            raise BenchFailed("error", "instruction counts (callgrind) run on this machine only: use the local "
                                       "transport")
        try:
            return self._in_rootfs(job, (), timeout)
        except TransportUnavailable as exc:
            raise BenchFailed("error", f"{exc.message}: {exc.hint}" if exc.hint else exc.message) from None

    def check(self, runtime: str | None = None) -> dict:
        import json

        done = self._in_rootfs(None, ["--probe", *(["--runtime", runtime] if runtime else [])], 300)
        try:
            found = json.loads(done.stdout.strip().splitlines()[-1])
        except (json.JSONDecodeError, IndexError):
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise TransportUnavailable(f"the emulator's Python did not start ({tail})",
                                       f"rebuild it: {self.missing_hint}") from None
        if found.get("error"):
            raise TransportUnavailable(f"emulator at {self.rootfs}: {found['error']}",
                                       f"rebuild it: {self.missing_hint}")
        return found

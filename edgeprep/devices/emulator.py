"""The emulated ARM64 device: a Debian arm64 root filesystem run with qemu-user (``make emulator`` builds it).

    python -m edgeprep.devices.emulator            # build (or confirm) the rootfs; what `make emulator` runs
    python -m edgeprep.devices.emulator --status   # where it is and what it holds

The rootfs is Debian bookworm for arm64, bootstrapped with ``debootstrap --arch=arm64`` through
``qemu-user-static`` (registered with binfmt_misc by ``update-binfmts --enable qemu-aarch64``), with aarch64
wheels of numpy and ai-edge-litert — the same versions as this machine's, so an x86 and an ARM run of one
artifact differ only in the CPU architecture and its kernels — installed into ``/usr/local/lib/python3.11``.
Debian bookworm's arm64 Python is 3.11, so the wheels are the ``cp311`` ones for ``manylinux_2_27_aarch64``.

It lives in ``$EDGEPREP_EMULATOR`` or ``.edgeprep/emulator/`` of this checkout (ignored by git). The build is
cached and idempotent: a rootfs whose recipe (Debian suite, wheel versions) matches is kept; otherwise it is
built under a temporary name and renamed into place when complete, so an interrupted build leaves nothing that
looks usable. Needs root (debootstrap, chroot), Debian's debootstrap, qemu-user-static and binfmt-support, and
the package indexes (about 3-5 minutes on 2 cores, most of it debootstrap configuring packages under qemu).
Using it does not need root: the rootfs is left readable by every user (see the qemu transport's ``isolation``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from edgeprep.errors import RuntimeUnavailable
from edgeprep.outputs import check_replaceable, publish

SUITE = "bookworm"
ARCH = "arm64"
PYTHON = "3.11"                          # Debian bookworm's python3 on every architecture
PLATFORM = "manylinux_2_27_aarch64"      # bookworm has glibc 2.36; pip also accepts older manylinux tags
PACKAGES = ("numpy", "ai-edge-litert")   # pinned to this machine's versions
CPU = "cortex-a72"                       # the Raspberry Pi 4's core: qemu emulates it, /proc/cpuinfo names it
# What the board's kernel shows for a Cortex-A72 (ARM implementer 0x41, part 0xd08, r0p3); XNNPACK's cpuinfo reads
# the part number to choose microkernels and the instruction-set features from the auxiliary vector qemu provides.
CPUINFO = ("processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
           "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\n"
           "CPU revision\t: 3\n\n")
ROOTFS_NAME = f"debian-{SUITE}-{ARCH}"
STAMP = ".edgeprep-emulator.json"        # inside the rootfs: the recipe it was built from
CHECKOUT = Path(__file__).resolve().parents[2]


def home() -> Path:
    """Where emulators live: ``$EDGEPREP_EMULATOR``, else ``.edgeprep/emulator`` in this checkout."""
    env = os.environ.get("EDGEPREP_EMULATOR")
    return Path(env).expanduser().resolve() if env else CHECKOUT / ".edgeprep" / "emulator"


def default_rootfs() -> Path:
    return home() / ROOTFS_NAME


def recipe() -> dict:
    """What a rootfs built now would hold; a rootfs with another recipe is rebuilt."""
    pins = {}
    for name in PACKAGES:
        try:
            pins[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            raise RuntimeUnavailable(f"{name} is not installed in this Python",
                                     "run 'make venv' first: the emulator gets the same versions") from None
    return {"suite": SUITE, "arch": ARCH, "python": PYTHON, "platform": PLATFORM, "cpu": CPU, "packages": pins}


def read_stamp(rootfs: Path) -> dict | None:
    try:
        return json.loads((Path(rootfs) / STAMP).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def missing_hint(rootfs: Path) -> str:
    return ("run 'make emulator' (builds it in about 5 minutes)" if Path(rootfs) == default_rootfs()
            else f"run 'make emulator' with EDGEPREP_EMULATOR={Path(rootfs).parent}, or fix [bench.qemu] rootfs")


def _run(cmd: list[str], what: str, log: Path, **kw) -> None:
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, **kw).returncode
    if code != 0:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise RuntimeUnavailable(f"{what} failed (exit code {code}); the last lines of {log}:\n{tail}")


def check_host() -> None:
    """Root, the Debian tools, and qemu-aarch64 registered with binfmt_misc (debootstrap runs arm64 binaries)."""
    if os.geteuid() != 0:
        raise RuntimeUnavailable("building the emulator needs root (debootstrap and chroot)", "run it as root")
    missing = [pkg for tool, pkg in (("debootstrap", "debootstrap"), ("qemu-aarch64-static", "qemu-user-static"),
                                     ("update-binfmts", "binfmt-support")) if shutil.which(tool) is None]
    if missing:
        raise RuntimeUnavailable(f"missing Debian packages: {' '.join(missing)}",
                                 f"apt-get install {' '.join(missing)}")
    binfmt = Path("/proc/sys/fs/binfmt_misc")
    if not (binfmt / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)], capture_output=True)
    subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], capture_output=True)
    entry = binfmt / "qemu-aarch64"
    if not entry.exists() or not entry.read_text().startswith("enabled"):
        raise RuntimeUnavailable("qemu-aarch64 is not registered with binfmt_misc",
                                 "run 'update-binfmts --enable qemu-aarch64' as root (needs binfmt_misc mounted)")


def download_wheels(wheels: Path, pins: dict, log: Path) -> None:
    """aarch64 cp311 wheels of the pinned packages and their dependencies (cached in ``wheels``)."""
    wheels.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(wheels), "--only-binary=:all:",
          "--platform", PLATFORM, "--python-version", PYTHON, "--implementation", "cp", "--abi",
          f"cp{PYTHON.replace('.', '')}", *[f"{k}=={v}" for k, v in pins.items()]], "pip download", log)


def install_wheels(rootfs: Path, wheels: Path, pins: dict, log: Path) -> None:
    site = rootfs / "usr" / "local" / "lib" / f"python{PYTHON}" / "dist-packages"
    _run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--find-links", str(wheels),
          "--target", str(site), "--only-binary=:all:", "--platform", PLATFORM, "--python-version", PYTHON,
          "--implementation", "cp", "--abi", f"cp{PYTHON.replace('.', '')}", "--no-compile",
          *[f"{k}=={v}" for k, v in pins.items()]], "pip install (into the rootfs)", log)


SMOKE = ("import json, platform, sys, numpy\nfrom ai_edge_litert import interpreter\n"
         "print(json.dumps({'machine': platform.machine(), 'python': platform.python_version(), "
         "'numpy': numpy.__version__}))")


def describe_cpu(rootfs: Path, cpus: int) -> None:
    """The emulated CPU as the board's kernel would describe it: nothing is mounted on the rootfs's /proc and
    /sys (the host's x86 files would make XNNPACK's cpuinfo give up or crash), so these files are what the
    emulated programs read. ``cpus`` is the host's count: qemu-user runs guest threads on host cores."""
    (rootfs / "proc" / "cpuinfo").write_text("".join(CPUINFO.format(i=i) for i in range(cpus))
                                             + "Model\t\t: Raspberry Pi 4 Model B (emulated by qemu-user)\n")
    cpu_dir = rootfs / "sys" / "devices" / "system" / "cpu"
    cpu_dir.mkdir(parents=True, exist_ok=True)
    for name in ("possible", "present", "online"):
        (cpu_dir / name).write_text(f"0-{cpus - 1}\n" if cpus > 1 else "0\n")


def open_to_all(rootfs: Path) -> None:
    """Let every user run benchmarks in it (the qemu transport's ``prefix`` isolation needs no root): the rootfs
    directory (made 0700 by mkdtemp) and the directories above it in ``home()`` become readable and searchable,
    and its ``/tmp`` is world-writable with the sticky bit, as on a real system."""
    try:
        for d in (rootfs, *[p for p in rootfs.parents if p == home() or home() in p.parents]):
            d.chmod(d.stat().st_mode | 0o555)
        (rootfs / "tmp").chmod(0o1777)
    except OSError as exc:            # e.g. a read-only $EDGEPREP_EMULATOR: root can still use it
        print(f"warning: cannot open {rootfs} to other users ({exc.strerror}): only root can use it",
              file=sys.stderr)


def smoke_test(rootfs: Path, log: Path) -> dict:
    """Run the rootfs's Python under qemu: it must be aarch64 and import numpy and LiteRT."""
    chroot = shutil.which("chroot") or "/usr/sbin/chroot"
    out = subprocess.run([chroot, str(rootfs), "/usr/bin/python3", "-c", SMOKE], capture_output=True, text=True,
                         timeout=300, env={"PATH": "/usr/bin:/bin", "QEMU_CPU": CPU, "LANG": "C.UTF-8"})
    with open(log, "a") as f:
        f.write(f"\n$ chroot {rootfs} python3 -c <smoke test>\n{out.stdout}{out.stderr}")
    if out.returncode != 0:
        raise RuntimeUnavailable(f"the emulator's Python cannot import numpy and LiteRT: "
                                 f"{(out.stderr.strip().splitlines() or ['no output'])[-1]}")
    found = json.loads(out.stdout.strip().splitlines()[-1])
    if found["machine"] != "aarch64":
        raise RuntimeUnavailable(f"the emulator reports machine {found['machine']!r}, not aarch64")
    return found


def build(rootfs: Path | None = None, force: bool = False, say=print) -> Path:
    """Build the rootfs at ``rootfs`` (default ``default_rootfs()``) unless one with the same recipe exists."""
    rootfs = Path(rootfs or default_rootfs())
    want = recipe()
    have = read_stamp(rootfs)
    if have and {k: v for k, v in have.items() if k in want} == want and not force:
        if os.geteuid() == 0:
            open_to_all(rootfs)          # a rootfs built before it was made readable
        say(f"emulator up to date: {rootfs}")
        return rootfs
    check_host()
    check_replaceable(rootfs, _built_here, "an emulator rootfs edgeprep built")   # never someone else's tree
    rootfs.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{rootfs.name}.", suffix=".tmp", dir=rootfs.parent))
    log = rootfs.parent / f"{rootfs.name}.build.log"
    log.write_text(f"building {rootfs} ({json.dumps(want)})\n")
    try:
        say(f"- debootstrap --arch={ARCH} --variant=minbase {SUITE} (arm64 binaries run under qemu; log: {log})")
        _run(["debootstrap", f"--arch={ARCH}", "--variant=minbase", "--include=python3", SUITE, str(tmp)],
             "debootstrap", log)
        shutil.rmtree(tmp / "var" / "cache" / "apt" / "archives", ignore_errors=True)
        (tmp / "var" / "cache" / "apt" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        say(f"- aarch64 wheels for Python {PYTHON} ({PLATFORM}): "
            + ", ".join(f"{k} {v}" for k, v in want["packages"].items()))
        download_wheels(rootfs.parent / "wheels", want["packages"], log)
        install_wheels(tmp, rootfs.parent / "wheels", want["packages"], log)
        describe_cpu(tmp, os.cpu_count() or 1)
        say("- smoke test: the emulated Python imports numpy and LiteRT")
        found = smoke_test(tmp, log)
        stamp = {**want, "python_version": found["python"], "built": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                  time.gmtime()),
                 "build_seconds": round(time.perf_counter() - start, 1), "qemu": qemu_version()}
        (tmp / STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
        open_to_all(tmp)
        publish(tmp, rootfs, _built_here, "an emulator rootfs edgeprep built")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say(f"emulator built in {time.perf_counter() - start:.0f} s: {rootfs}")
    return rootfs


def _built_here(rootfs: Path) -> bool:
    return (rootfs / STAMP).is_file()


def qemu_version() -> str | None:
    try:
        out = subprocess.run(["qemu-aarch64-static", "--version"], capture_output=True, text=True, timeout=10)
        return out.stdout.splitlines()[0].strip() if out.stdout else None
    except (OSError, subprocess.SubprocessError):
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgeprep.devices.emulator", description=__doc__.splitlines()[0])
    ap.add_argument("--rootfs", type=Path, help=f"where to build it (default: {default_rootfs()})")
    ap.add_argument("--rebuild", action="store_true", help="build again even if an up-to-date rootfs exists")
    ap.add_argument("--status", action="store_true", help="print where the rootfs is and its recipe, then exit")
    args = ap.parse_args(argv)
    rootfs = args.rootfs or default_rootfs()
    if args.status:
        stamp = read_stamp(rootfs)
        print(json.dumps({"rootfs": str(rootfs), "built": stamp is not None, "recipe": stamp}, indent=2))
        return 0 if stamp else 1
    try:
        build(rootfs, force=args.rebuild)
    except RuntimeUnavailable as exc:
        print(f"make emulator: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

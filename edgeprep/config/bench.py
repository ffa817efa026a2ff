"""The ``[bench]`` table of a target profile: how ``edgeprep run`` benchmarks each artifact (device_bench).

    [bench]
    runs = 100              # timed iterations per process (at least)
    repeats = 3             # fresh processes per artifact: the gate's statistics need the between-process spread
    warmup = 10             # untimed iterations after the first inference
    min_seconds = 0.0       # ... or keep iterating until this much measured time has passed
    timeout_seconds = 300   # a benchmark still running then is stopped and reported as an error
    instructions = false    # also count instructions per inference with valgrind (callgrind), 1 thread
    profile = false         # also record where the time goes per op type (OpenVINO's per-node counters)
    transport = "local"     # or "qemu-aarch64" (the emulated ARM64 board) or "ssh" (with a [bench.ssh] table)
    runner = "coreml"       # device_bench runner on the device (default: the one that executes it here)

A profile without ``[bench]`` is not benchmarked by ``edgeprep run``; ``edgeprep bench`` uses these values (or the
defaults) with its command-line options on top.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from edgeprep.config.device import QemuConfig, SSHConfig


@dataclass(frozen=True)
class BenchConfig:
    runs: int = 100
    repeats: int = 3
    warmup: int = 10
    min_seconds: float = 0.0
    threads: int | None = None          # default: the target's threads
    timeout_seconds: float = 300.0
    transport: str = "local"            # where the benchmark process runs (device_bench.transports)
    instructions: bool = False          # callgrind instruction count per inference (deterministic cost figure)
    profile: bool = False               # per-op times from the runtime's counters (OpenVINO), after the timing
    runner: str | None = None           # device_bench runner on the device; default: the one verifying it here
    options: dict = field(default_factory=dict)   # that runner's options (with runner); default: the artifact's
    ssh: SSHConfig | None = None        # [bench.ssh]: the device, for transport = "ssh"
    qemu: QemuConfig | None = None      # [bench.qemu]: the emulator, for transport = "qemu-aarch64"

    def __post_init__(self) -> None:
        if self.runs < 1:
            raise ValueError("runs must be >= 1")
        if self.repeats < 1:
            raise ValueError("repeats must be >= 1")
        if self.warmup < 0:
            raise ValueError("warmup must be >= 0")
        if self.min_seconds < 0:
            raise ValueError("min_seconds must be >= 0")
        if self.threads is not None and self.threads < 1:
            raise ValueError("threads must be >= 1")
        if self.timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be > 0")
        from device_bench.transports import names

        if self.transport not in names():
            raise ValueError(f"transport must be one of {', '.join(names())}, got {self.transport!r}")
        if self.transport == "ssh" and self.ssh is None:
            raise ValueError("transport \"ssh\" needs a [bench.ssh] table naming the device's host")
        for table, transport in (("ssh", "ssh"), ("qemu", "qemu-aarch64")):
            if getattr(self, table) is not None and self.transport != transport:
                raise ValueError(f"[bench.{table}] is set but transport is {self.transport!r}; set transport = "
                                 f"\"{transport}\" or remove the table")
        if self.runner is not None:
            from device_bench.runners import names as runners

            if self.runner not in runners():
                raise ValueError(f"runner must be one of {', '.join(runners())}, got {self.runner!r}")
        elif self.options:
            raise ValueError("options are for the runner named by runner; set runner too")

    def transport_settings(self) -> dict:
        """Keyword arguments of the transport (``device_bench.transports.get_transport``)."""
        if self.transport == "ssh":
            return asdict(self.ssh)
        if self.transport == "qemu-aarch64":
            from pathlib import Path

            from edgeprep.devices.emulator import default_rootfs, missing_hint

            qemu = self.qemu or QemuConfig()
            rootfs = Path(qemu.rootfs).expanduser().resolve() if qemu.rootfs else default_rootfs()
            return {"rootfs": str(rootfs), "python": qemu.python, "isolation": qemu.isolation,
                    "missing_hint": missing_hint(rootfs)}
        return {}

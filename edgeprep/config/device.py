"""Where a target's benchmarks run when it is not this machine: ``[bench.ssh]`` and ``[bench.qemu]``.

    [bench]
    transport = "ssh"
    [bench.ssh]
    host = "raspberrypi.local"
    user = "pi"
    key = "~/.ssh/id_ed25519"                 # default: ssh's own keys and agent
    known_hosts = "~/.ssh/known_hosts"        # host-key checking is always on, against this file only
    python = "/home/pi/venv/bin/python"       # a Python with numpy and the runtime (ai-edge-litert...)

    [bench]
    transport = "qemu-aarch64"
    [bench.qemu]                              # optional
    rootfs = "/srv/emulator/debian-bookworm-arm64"   # default: what `make emulator` builds
    isolation = "auto"                        # chroot (root) | prefix (qemu -L, any user) | auto

Paths may start with ``~``; relative paths are relative to the directory edgeprep runs in.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SSHConfig:
    host: str
    user: str | None = None
    port: int = 22
    key: str | None = None                  # identity file; default: ssh's own keys and agent
    known_hosts: str = "~/.ssh/known_hosts"
    python: str = "python3"                 # on the device: a command name or an absolute path
    remote_tmp: str | None = None           # parent of the per-benchmark directory; default: the device's temp
    connect_timeout: float = 10.0
    retries: int = 2                        # further attempts when the device cannot be reached or drops

    def __post_init__(self) -> None:
        if not self.host.strip() or self.host.startswith("-") or any(c.isspace() for c in self.host):
            raise ValueError(f"host must be a host name or address, got {self.host!r}")
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be 1-65535, got {self.port}")
        if self.user is not None and (not self.user or self.user.startswith("-")):
            raise ValueError(f"user must be a user name, got {self.user!r}")
        if not self.python.strip():
            raise ValueError("python must name the device's Python")
        if self.connect_timeout <= 0:
            raise ValueError("connect_timeout must be > 0")
        if not 0 <= self.retries <= 10:
            raise ValueError("retries must be 0-10")


@dataclass(frozen=True)
class QemuConfig:
    rootfs: str | None = None               # default: edgeprep.devices.emulator.default_rootfs()
    python: str = "/usr/bin/python3"        # inside the rootfs
    isolation: str = "auto"                 # chroot (needs root) | prefix (qemu -L; any user) | auto: by user

    def __post_init__(self) -> None:
        if self.isolation not in ("auto", "chroot", "prefix"):
            raise ValueError(f"isolation must be auto, chroot or prefix, got {self.isolation!r}")
        if not self.python.startswith("/"):
            raise ValueError(f"python must be an absolute path inside the rootfs, got {self.python!r}")

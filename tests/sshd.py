"""A real OpenSSH server on 127.0.0.1 for the ssh transport's tests: Debian's /usr/sbin/sshd with its own host
and user keys in a temporary directory, listening on free high ports, stopped (with its sessions) by process id."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SSHD_BIN = "/usr/sbin/sshd"


def available() -> bool:
    return Path(SSHD_BIN).is_file() and shutil.which("ssh") is not None and shutil.which("ssh-keygen") is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


class SSHD:
    """``SSHD(directory, ports=2)``: one sshd listening on several ports (each port a separate "device")."""

    def __init__(self, directory: Path, ports: int = 1):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host_key = keygen(self.dir / "host_ed25519")
        self.user_key = keygen(self.dir / "user_ed25519")
        (self.dir / "authorized_keys").write_text((self.dir / "user_ed25519.pub").read_text())
        self.ports = [free_port() for _ in range(ports)]
        host_pub = " ".join((self.dir / "host_ed25519.pub").read_text().split()[:2])
        self.known_hosts = self.dir / "known_hosts"
        self.known_hosts.write_text("".join(f"[127.0.0.1]:{p} {host_pub}\n" for p in self.ports))
        config = [f"Port {p}" for p in self.ports] + [
            "ListenAddress 127.0.0.1", f'HostKey "{self.host_key}"',
            f'AuthorizedKeysFile "{self.dir / "authorized_keys"}"',
            "PidFile none", "UsePAM no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "StrictModes no", "PermitRootLogin prohibit-password", "MaxStartups 50", "MaxSessions 50"]
        (self.dir / "sshd_config").write_text("\n".join(config) + "\n")
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        self.log = open(self.dir / "sshd.log", "w")
        self.proc = subprocess.Popen([SSHD_BIN, "-D", "-e", "-f", str(self.dir / "sshd_config")], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + 10
        while time.time() < deadline:
            if all(self._listening(p) for p in self.ports):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sshd did not start: {(self.dir / 'sshd.log').read_text()[-2000:]}")

    @staticmethod
    def _listening(port: int) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    def settings(self, port_index: int = 0, **over) -> dict:
        """Keyword arguments of the ssh transport (and keys of [bench.ssh]) for one of the ports."""
        import sys

        return {"host": "127.0.0.1", "port": self.ports[port_index], "key": str(self.user_key),
                "known_hosts": str(self.known_hosts), "python": sys.executable, **over}

    def toml(self, port_index: int = 0, **over) -> str:
        import json

        return "[bench.ssh]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in self.settings(port_index,
                                                                                             **over).items())

    def _tree(self, pid: int) -> list[int]:
        out = [pid]
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    for child in f.read().split():
                        out += self._tree(int(child))
        except OSError:
            pass
        return out

    def kill_server(self) -> None:
        """The device drops off the network: kill sshd and its per-connection processes (by id), not the
        programs the sessions started (as when a link goes down, they see their connection close)."""
        for pid in self._tree(self.proc.pid):
            try:
                with open(f"/proc/{pid}/comm") as f:
                    if f.read().strip() != "sshd":
                        continue
                os.kill(pid, signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            for pid in reversed(self._tree(self.proc.pid)):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.wait(timeout=10)
        self.log.close()

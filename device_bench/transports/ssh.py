"""The ssh transport: device_bench on a board or a Mac, with the device's own Python and runtime.

One ssh connection per benchmark process. The device's Python runs a small bootstrap (``BOOT``, passed with
``-c``) that reads a length-prefixed tar from stdin — ``device_bench.pyz``, the artifact as ``model<suffix>`` and
the data as ``data.npz`` — into a fresh temporary directory, runs ``python device_bench.pyz ARGS`` there, and
removes the directory when the benchmark ends, when its own timeout passes, or when stdin reaches end-of-file
(the client finished, was stopped, or the connection dropped). The JSON result comes back on stdout.

Safety: host-key checking stays on (``StrictHostKeyChecking=yes`` against one explicit known_hosts file, never
updated by us; ``BatchMode=yes``, so nothing prompts). ssh joins the remote command's words with spaces and hands
them to the login shell, so the command is built from ``shlex.quote``d words only and everything variable (the
arguments, the remote temporary directory) travels inside one quoted JSON word; no local path reaches the device
(files are renamed). Connection failures are retried with back-off; wrong keys, unknown host keys and a missing
Python are not (retrying cannot fix them) and are reported with the fix.
"""

from __future__ import annotations

import io
import json
import shlex
import time
from pathlib import Path
from typing import Sequence

from device_bench.bench import Job
from device_bench.transports import register
from device_bench.transports.base import BenchFailed, Completed, Transport, TransportUnavailable, run_process
from device_bench.transports.bundle import Payload, payload, write_tar

READY = "device-bench-remote: ready"
TIMED_OUT = 124                 # the bootstrap's exit code when it stopped the benchmark at its timeout
TRANSFER_SLACK = 60.0           # seconds allowed beyond the timeout for connecting and copying the files

# Runs on the device (any Python 3; device_bench itself checks for 3.9+). Keep it short: it is one argv word.
BOOT = r"""
import json, os, shutil, signal, subprocess, sys, tarfile, tempfile, threading
spec = json.loads(sys.argv[1])
inp = sys.stdin.buffer
left = int(inp.readline())
class Part:
    def read(self, n=-1):
        global left
        n = left if n is None or n < 0 else min(n, left)
        b = inp.read(n) if n else b""
        left -= len(b)
        return b
def bye(*_):
    raise SystemExit(143)
signal.signal(signal.SIGTERM, bye)
signal.signal(signal.SIGHUP, bye)
d = tempfile.mkdtemp(prefix="device-bench-", dir=spec["tmp"])
child = None
code = 1
def stop():
    if child is not None and child.poll() is None:
        child.kill()
def gone():
    inp.read()
    stop()
try:
    with tarfile.open(fileobj=Part(), mode="r|") as t:
        for m in t:
            p = os.path.normpath(m.name)
            if not m.isfile() or p.startswith("..") or os.path.isabs(p):
                raise SystemExit("device_bench: error: refusing payload member %r" % m.name)
            if hasattr(tarfile, "data_filter"):
                t.extract(m, d, filter="data")
            else:
                t.extract(m, d)
    sys.stderr.write("device-bench-remote: ready\n")
    sys.stderr.flush()
    threading.Thread(target=gone, daemon=True).start()
    child = subprocess.Popen([sys.executable, "device_bench.pyz"] + spec["argv"], cwd=d)
    try:
        code = child.wait(timeout=spec["timeout"])
    except subprocess.TimeoutExpired:
        stop()
        child.wait()
        code = 124
except SystemExit as e:
    if isinstance(e.code, str):
        sys.stderr.write(e.code + "\n")
    code = e.code if isinstance(e.code, int) else 2
finally:
    stop()
    shutil.rmtree(d, ignore_errors=True)
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
"""

# ssh's own words for problems retrying cannot fix, and for a device that cannot be reached right now.
_HOST_KEY = ("Host key verification failed", "REMOTE HOST IDENTIFICATION HAS CHANGED", "No ED25519 host key",
             "host key for", "Host key for")
_AUTH = ("Permission denied", "Too many authentication failures", "no such identity", "Load key")
_UNREACHABLE = ("Connection refused", "No route to host", "Connection timed out", "Could not resolve hostname",
                "Network is unreachable", "Connection reset", "kex_exchange_identification", "Connection closed",
                "closed by remote host", "Broken pipe", "Operation timed out", "Timeout, server")


class _Problem(Exception):
    def __init__(self, kind: str, message: str, hint: str | None, retry: bool):
        super().__init__(message)
        self.kind, self.message, self.hint, self.retry = kind, message, hint, retry


def _ssh_value(path: str) -> str:
    """A path as an ``-o Key=value`` value: ssh splits values at spaces (quote them) and expands ``%`` tokens."""
    text = str(Path(path).expanduser()).replace("%", "%%").replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


@register("ssh")
class SSHTransport(Transport):
    copies_files = True

    def __init__(self, host: str, user: str | None = None, port: int = 22, key: str | None = None,
                 known_hosts: str = "~/.ssh/known_hosts", python: str = "python3", remote_tmp: str | None = None,
                 connect_timeout: float = 10.0, retries: int = 2, ssh: str = "ssh", backoff: float = 1.0):
        if not host or host.startswith("-"):
            raise TransportUnavailable(f"invalid ssh host {host!r}", "set host in [bench.ssh]")
        self.host, self.user, self.port, self.key = host, user, int(port), key
        self.known_hosts, self.python, self.remote_tmp = known_hosts, python, remote_tmp
        self.connect_timeout, self.retries, self.ssh, self.backoff = connect_timeout, retries, ssh, backoff

    @property
    def where(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.host}:{self.port}"

    def describe(self) -> dict:
        return {"transport": "ssh", "emulated": False, "host": self.host, "port": self.port, "user": self.user,
                "python": self.python}

    def device_key(self) -> str:
        return f"ssh://{self.host}:{self.port}"

    def command(self, remote_words: Sequence[str]) -> list[str]:
        """The local ssh argument list; ``remote_words`` become one shell-quoted remote command string."""
        opts = {"BatchMode": "yes", "StrictHostKeyChecking": "yes",
                "UserKnownHostsFile": _ssh_value(self.known_hosts), "GlobalKnownHostsFile": "/dev/null",
                "ConnectTimeout": str(max(1, int(round(self.connect_timeout)))), "ServerAliveInterval": "5",
                "ServerAliveCountMax": "3", "LogLevel": "ERROR"}
        cmd = [self.ssh, "-T", "-p", str(self.port)]
        if self.user:
            cmd += ["-l", self.user]
        if self.key:
            cmd += ["-i", str(Path(self.key).expanduser())]
            opts["IdentitiesOnly"] = "yes"
        for k, v in opts.items():
            cmd += ["-o", f"{k}={v}"]
        return cmd + ["--", self.host, " ".join(shlex.quote(w) for w in remote_words)]

    def _call(self, load: Payload, timeout: float) -> Completed:
        """Send ``load`` and run it; retries what a retry can fix. Raises ``_Problem`` for connection trouble."""
        blob = io.BytesIO()
        write_tar(load, blob)
        data = f"{blob.tell()}\n".encode() + blob.getvalue()
        spec = json.dumps({"argv": list(load.argv), "tmp": self.remote_tmp, "timeout": timeout})
        cmd = self.command([self.python, "-c", BOOT, spec])
        first: _Problem | None = None
        for attempt in range(self.retries + 1):
            # The device stops the benchmark itself after ``timeout`` (exit 124); the local deadline adds the time
            # to connect and to copy the files, and covers a device that stopped answering.
            done = run_process(cmd, timeout + self.connect_timeout + TRANSFER_SLACK, stdin=data)
            if done.returncode == TIMED_OUT and READY in done.stderr:
                return Completed(None, done.stdout, done.stderr, done.seconds)
            problem = self._classify(done)
            if problem is None:
                return done
            first = first or problem
            if not problem.retry or attempt == self.retries:
                message = problem.message if first.message == problem.message else \
                    f"{first.message}; then {problem.message}"
                raise _Problem(first.kind, message + (f" ({attempt + 1} attempts)" if attempt else ""),
                               problem.hint, False)
            time.sleep(self.backoff * 2 ** attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _classify(self, done: Completed) -> _Problem | None:
        if done.returncode is None:
            return None                        # a timeout: parse() reports it
        err = done.stderr
        said = next((ln.strip() for ln in err.splitlines()[::-1] if ln.strip() and READY not in ln), "")
        started = READY in err
        if done.returncode == 255 and started:
            return _Problem("disconnected", f"{self.where}: the device disconnected during the benchmark ({said})",
                            "check the device and the network; the benchmark was not completed", True)
        if done.returncode == 255:
            if any(s in err for s in _HOST_KEY):
                return _Problem("unreachable", f"{self.where}: host key not trusted ({said})",
                                f"check the device's host key fingerprint, then add it to {self.known_hosts} "
                                f"(ssh-keyscan -p {self.port} {self.host}, verified with ssh-keygen -lf)", False)
            if any(s in err for s in _AUTH):
                return _Problem("unreachable", f"{self.where}: the device refused the login ({said})",
                                f"put the public key of {self.key or 'your ssh key'} in ~/.ssh/authorized_keys of "
                                f"{self.user or 'the user'} on the device, or fix key/user in [bench.ssh]", False)
            return _Problem("unreachable", f"{self.where}: cannot reach the device ({said or 'ssh exit code 255'})",
                            "check that it is on, on the network and running sshd, and host/port in [bench.ssh]",
                            any(s in err for s in _UNREACHABLE) or not err.strip())
        if not started and done.returncode in (126, 127):
            return _Problem("error", f"{self.where}: cannot run the device's Python {self.python!r} ({said})",
                            "install Python 3.9+ there, or set python in [bench.ssh] to its path", False)
        return None

    def execute(self, job: Job, timeout: float, wrapper: Sequence[str] = ()) -> Completed:
        if wrapper:
            raise BenchFailed("error", "instruction counts (callgrind) run on this machine only: use the local "
                                       "transport")
        try:
            return self._call(payload(job), timeout)
        except _Problem as exc:
            raise BenchFailed(exc.kind, f"{exc.message}: {exc.hint}" if exc.hint else exc.message) from None

    def check(self, runtime: str | None = None) -> dict:
        try:
            done = self._call(Payload((), ("--probe", *(["--runtime", runtime] if runtime else []))), 120)
        except _Problem as exc:
            raise TransportUnavailable(exc.message, exc.hint) from None
        try:
            found = json.loads(done.stdout.strip().splitlines()[-1])
        except (json.JSONDecodeError, IndexError):
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise TransportUnavailable(f"{self.where}: device_bench did not start with {self.python!r} ({tail})",
                                       "check that python in [bench.ssh] is Python 3.9+ with numpy") from None
        if found.get("error"):
            raise TransportUnavailable(f"{self.where}: {found['error']}",
                                       f"install it for {self.python} on the device")
        return found

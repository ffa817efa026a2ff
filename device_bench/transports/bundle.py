"""What a transport puts on a device: device_bench as one zipapp, and a job's files under fixed, safe names.

The zipapp (``device_bench.pyz``) is this package's ``.py`` files plus a ``__main__.py`` that runs
``python -m device_bench`` (or, with ``--probe``, ``device_bench.device``): a device needs only a Python, numpy
and the runtime. Files go to the device as ``model<suffix>`` (with an OpenVINO ``.bin`` beside its ``.xml``, a
Core ML package as a directory tree) and ``data.npz``, so no local path — spaces, quotes and all — ever reaches
a remote command line.
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from device_bench.bench import Job

BUNDLE = "device_bench.pyz"
PACKAGE_DIR = Path(__file__).resolve().parents[1]      # device_bench/
MAIN = """\
import sys
if sys.version_info < (3, 9):
    sys.exit("device_bench: error: Python %d.%d is too old: device_bench needs Python 3.9 or newer"
             % sys.version_info[:2])
if sys.argv[1:2] == ["--probe"]:
    from device_bench.device import main
    sys.exit(main(sys.argv[2:]))
from device_bench.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


@lru_cache(maxsize=1)
def zipapp_bytes() -> bytes:
    """device_bench as a zipapp (deterministic: sorted names, fixed timestamps)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        def add(name: str, data: bytes) -> None:
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)

        add("__main__.py", MAIN.encode())
        for path in sorted(PACKAGE_DIR.rglob("*.py")):
            add(str(Path("device_bench") / path.relative_to(PACKAGE_DIR)), path.read_bytes())
    return buf.getvalue()


@dataclass(frozen=True)
class Payload:
    """A job as the device sees it: ``files`` are (local path, name on the device), ``argv`` uses those names."""

    files: tuple[tuple[str, str], ...]
    argv: tuple[str, ...]


def artifact_files(artifact: str, stem: str = "model") -> list[tuple[str, str]]:
    """(local file, device name) for every file of an artifact: a directory tree, an .xml with its .bin, a file."""
    path = Path(artifact)
    suffix = path.suffix or ".model"
    name = f"{stem}{suffix}"
    if path.is_dir():
        return [(str(p), f"{name}/{p.relative_to(path).as_posix()}") for p in sorted(path.rglob("*")) if p.is_file()]
    out = [(str(path), name)]
    if suffix == ".xml" and path.with_suffix(".bin").is_file():
        out.append((str(path.with_suffix(".bin")), f"{stem}.bin"))
    return out


def payload(job: Job, prefix: str = "") -> Payload:
    """The files ``job`` needs on the device and its device_bench arguments, with names under ``prefix``."""
    files = artifact_files(job.artifact)
    names = {job.artifact: prefix + files[0][1].split("/")[0]}
    if job.data:
        files.append((job.data, "data.npz"))
        names[job.data] = prefix + "data.npz"
    if job.versus:
        other = artifact_files(job.versus, "versus")
        files += other
        names[job.versus] = prefix + other[0][1].split("/")[0]
    return Payload(tuple(files), tuple(job.argv(lambda p: names[p])))


def write_tree(payload: Payload, directory: Path) -> None:
    """Copy a payload and the zipapp into ``directory`` (a local staging directory, e.g. inside a rootfs)."""
    import shutil

    (directory / BUNDLE).write_bytes(zipapp_bytes())
    for local, name in payload.files:
        dest = directory / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, dest)


def write_tar(payload: Payload, out) -> None:
    """Stream a payload and the zipapp as an uncompressed tar to the binary file object ``out``."""
    import tarfile

    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        data = zipapp_bytes()
        info = tarfile.TarInfo(BUNDLE)
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
        for local, name in payload.files:
            info = tarfile.TarInfo(name)
            info.size, info.mode = os.path.getsize(local), 0o644
            with open(local, "rb") as f:
                tar.addfile(info, f)


def restore_paths(result: dict, job: Job) -> dict:
    """A device's JSON result with the host's paths put back (the device saw ``model.tflite``...)."""
    result["job"] = job.to_dict()
    art = result.get("artifact") or {}
    art["path"] = job.artifact
    art["files"] = [local for local, _ in artifact_files(job.artifact)]
    if result.get("versus"):
        result["versus"]["artifact"] = job.versus
    return result

"""Hostile and broken input through the real CLI (issue 12): one line naming the problem and the fix, exit 2, no
traceback, nothing written; and never a hang. Each command runs in a subprocess with a timeout, so a regression
fails instead of blocking the suite."""

from __future__ import annotations

import json
import os
import socket
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLE_MODEL, run_cli
from PIL import Image

TINY_BENCH = """name = "tiny-bench"
description = "a few runs: these tests are about the data, not the timings"
formats = ["tflite"]
precisions = ["fp32"]
threads = 1
[bench]
runs = 20
repeats = 1
warmup = 2
"""
TIMEOUT = 300   # seconds: far above what each command takes (a few seconds to ~30 s on 2 busy cores)


def write_bomb_png(path: Path, width: int = 30000, height: int = 30000) -> Path:
    """A valid all-black 1-bit PNG of ``width`` x ``height`` (900 megapixels by default) in about 110 KB, written
    in streamed zlib blocks: Pillow's Image.new("1", ...) would hold a byte per pixel (900 MB) to write it."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    comp = zlib.compressobj(6)
    rows = (b"\x00" * (1 + (width + 7) // 8)) * 100          # 100 rows: filter byte 0, then the packed pixels
    idat = b"".join(comp.compress(rows) for _ in range(height // 100)) + comp.compress(
        (b"\x00" * (1 + (width + 7) // 8)) * (height % 100)) + comp.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)   # bit depth 1, greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """The example model as an fp32 .tflite (28x28x1 in, 10 classes out), and a bench target for it."""
    from edgeprep.config.formats import TFLiteOptions
    from edgeprep.models import load_model
    from edgeprep.stages.convert import convert

    d = tmp_path_factory.mktemp("bad-input")
    convert(load_model(EXAMPLE_MODEL), "tflite", "fp32", TFLiteOptions(), d / "m.fp32.tflite")
    (d / "tiny.toml").write_text(TINY_BENCH)
    return d / "m.fp32.tflite"


def _images(folder, eval_npz, n):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(eval_npz["x"][i][..., 0]).save(folder / f"img_{i:03d}.png")
    return folder


def _one_line_error(proc, *fragments):
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], err[-2000:])
    assert "Traceback" not in proc.stderr and err.count("\n") == 0, err
    assert err.startswith("edgeprep: error: ")
    for f in fragments:
        assert f in err, err
    return err


@pytest.mark.slow
def test_fifo_socket_and_links_to_them_in_an_image_folder_are_skipped_not_read(artifact, eval_npz, tmp_path):
    folder = _images(tmp_path / "images", eval_npz, 12)
    os.mkfifo(folder / "aaa_pipe.png")                                # sorted first: read for the shape check
    os.symlink(folder / "aaa_pipe.png", folder / "zzz_link_to_pipe.png")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(folder / "mmm_socket.png"))
    try:
        # opened for reading, a FIFO without a writer never returns: the timeout turns a regression into a failure
        proc = run_cli("-q", "bench", str(artifact), "--target", str(artifact.parent / "tiny.toml"),
                       "--data", str(folder), "--out", str(tmp_path / "run"), timeout=TIMEOUT)
    finally:
        sock.close()
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((tmp_path / "run" / "report.json").read_text())["data"]["evaluation"]
    assert data["samples"] == 12
    assert {os.path.basename(s["path"]): s["reason"] for s in data["skipped"]} == {
        "aaa_pipe.png": "a FIFO", "mmm_socket.png": "a socket",
        "zzz_link_to_pipe.png": "a FIFO (through a symbolic link)"}


@pytest.mark.slow
def test_an_image_folder_with_nothing_readable_is_an_error(artifact, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    os.mkfifo(folder / "a.png")
    proc = run_cli("-q", "bench", str(artifact), "--data", str(folder), "--out", str(tmp_path / "run"), timeout=TIMEOUT)
    _one_line_error(proc, f"{folder}: no images found", f"skipped {folder / 'a.png'} (a FIFO)")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.parametrize("command", ["bench", "convert"])
def test_a_decompression_bomb_is_exit_2_naming_the_file(artifact, eval_npz, tmp_path, command):
    folder = _images(tmp_path / "images", eval_npz, 3)
    bomb = write_bomb_png(folder / "aaa_bomb.png")                     # 30000 x 30000, about 110 KB
    out = tmp_path / ("run" if command == "bench" else "m.int8.tflite")
    args = (["bench", str(artifact)] if command == "bench" else
            ["convert", str(EXAMPLE_MODEL), "--to", "tflite", "--precision", "int8"])
    proc = run_cli("-q", *args, "--data", str(folder), "--out", str(out), timeout=TIMEOUT)
    _one_line_error(proc, f"{bomb}: image is 30000 x 30000 = 900,000,000 pixels, above the limit of 89,478,485",
                    "max_image_pixels")
    assert not out.exists()


@pytest.mark.slow
def test_a_corrupt_image_is_exit_2_naming_the_file(artifact, eval_npz, tmp_path):
    folder = _images(tmp_path / "images", eval_npz, 3)
    (folder / "aaa_bad.ppm").write_bytes(b"P5\n28 2k\n255\n" + bytes(28 * 28))   # Pillow raises ValueError
    proc = run_cli("-q", "bench", str(artifact), "--data", str(folder), "--out", str(tmp_path / "run"), timeout=TIMEOUT)
    _one_line_error(proc, f"{folder / 'aaa_bad.ppm'}: unreadable image", "remove or replace the file")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.parametrize("bad, fragment", [
    (99, "range from 0 to 99 but the model (fashion_mnist_cnn.keras) has 10 outputs (classes 0..9); 100 of 200"),
    (-1, "range from -1 to 9 but the model (fashion_mnist_cnn.keras) has 10 outputs (classes 0..9); 100 of 200"),
])
def test_labels_out_of_range_are_refused_before_anything_is_written(artifact, eval_npz, tmp_path, bad, fragment):
    y = eval_npz["y"][:200].astype(np.int64)
    y[::2] = bad
    np.savez(tmp_path / "d.npz", x=eval_npz["x"][:200], y=y)
    proc = run_cli("-q", "verify", str(EXAMPLE_MODEL), str(artifact), "--data", str(tmp_path / "d.npz"),
                   "--scale", str(1 / 255), "--out", str(tmp_path / "out"), timeout=TIMEOUT)
    _one_line_error(proc, f"labels in {tmp_path / 'd.npz'} {fragment}", "fix the labels or the model")
    out = tmp_path / "out"
    assert not out.exists() or list(out.iterdir()) == []      # verify may make --out up front: nothing in it

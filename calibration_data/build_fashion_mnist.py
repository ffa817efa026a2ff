"""Rebuild the committed Fashion-MNIST subsets from the Debian package ``dataset-fashion-mnist``.

    apt-get install dataset-fashion-mnist
    python calibration_data/build_fashion_mnist.py

Writes, next to this script:
  fashion_mnist_calib.npz  1,000 images from the *training* split (100 per class), for calibration
  fashion_mnist_eval.npz   2,000 images from the *test* split (200 per class), for evaluation

Each file holds ``x`` (uint8, NHWC: N x 28 x 28 x 1), ``y`` (uint8 class index) and ``classes``.
The selection is a fixed-seed, class-balanced sample, so re-running the script reproduces the files bit for bit.
Fashion-MNIST is (c) 2017 Zalando SE, MIT licence; see LICENSE-fashion-mnist.txt.
"""

from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

import numpy as np

SOURCE = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST container format): big-endian magic, dims, then raw uint8 data."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[0:4], "big")
    if magic >> 8 != 0x08:  # 0x08 = unsigned byte payload
        raise ValueError(f"{path}: not a uint8 IDX file (magic {magic:#x})")
    ndim = magic & 0xFF
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(source: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if split == "train" else "t10k"
    x = read_idx(source / f"{prefix}-images-idx3-ubyte.gz")[..., None]  # NHWC
    y = read_idx(source / f"{prefix}-labels-idx1-ubyte.gz")
    return x, y


def balanced_subset(y: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    idx = [rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in range(len(CLASSES))]
    out = np.concatenate(idx)
    rng.shuffle(out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=SOURCE)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = ap.parse_args(argv)
    if not (args.source / "train-images-idx3-ubyte.gz").exists():
        print(f"error: Fashion-MNIST not found in {args.source}; install it with "
              "'apt-get install dataset-fashion-mnist'", file=sys.stderr)
        return 2
    for split, name, per_class, seed in (("train", "fashion_mnist_calib.npz", 100, 0),
                                         ("test", "fashion_mnist_eval.npz", 200, 1)):
        x, y = load_split(args.source, split)
        sel = balanced_subset(y, per_class, seed)
        np.savez_compressed(args.out / name, x=x[sel], y=y[sel], classes=np.array(CLASSES))
        print(f"{name}: {len(sel)} images from the {split} split, {(args.out / name).stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())

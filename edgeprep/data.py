"""Datasets: loading, preprocessing and streamed batches.

Accepted sources
- ``.npz`` with an array ``x`` (NHWC images) and optionally ``y`` (integer class labels);
- ``.npy`` with NHWC images (memory-mapped, so large calibration sets are streamed, not loaded);
- a folder of images: one subfolder per class (the Keras convention, classes sorted by name) or flat (unlabelled);
- a data manifest (``.toml``) naming a calibration and an evaluation source and their preprocessing.

Labels are integer class indices (or one-hot rows); ``check_labels`` refuses labels that name no output of the model.

An image folder reads regular files only (or symbolic links to them): FIFOs, sockets and device nodes are never
opened (a FIFO would block forever) but skipped, listed in ``Dataset.skipped`` and in the dataset's description.
Images above ``max_image_pixels`` (default ``DEFAULT_MAX_IMAGE_PIXELS``, Pillow's own limit) are refused before they
are decoded, so a decompression bomb (a few KB of PNG that decode to gigabytes) is an error naming the file. A data
manifest raises the limit with a top-level key::

    calibration = "images/"
    max_image_pixels = 200_000_000

Preprocessing (``Preprocess``) turns raw samples into model input: optional resize (bilinear, half-pixel centres),
channel conversion (grey <-> RGB), ``x * scale + offset`` then optional per-channel ``(x - mean) / std``, and the
layout the model wants (NHWC or NCHW). It is applied batch by batch as data streams.
"""

from __future__ import annotations

import math
import os
import stat
import struct
import tomllib
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Literal

import numpy as np

from edgeprep.config import from_mapping, merge, to_mapping
from edgeprep.errors import ConfigError, DataError, InputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485   # Pillow's Image.MAX_IMAGE_PIXELS: ~0.09 gigapixels, 256 MiB as RGBA


@dataclass(frozen=True)
class Preprocess:
    """How raw samples become model input. The resolved value is recorded in every report."""

    resize: tuple[int, int] | None = None          # (height, width)
    channels: Literal[1, 3] | None = None          # convert grey <-> RGB; None keeps the data's channels
    scale: float = 1.0                              # x * scale + offset, e.g. 1/255 for pixels in [0, 1]
    offset: float = 0.0
    mean: tuple[float, ...] | None = None           # then (x - mean) / std, per channel or one value
    std: tuple[float, ...] | None = None
    layout: Literal["NHWC", "NCHW"] = "NHWC"        # the layout the model expects; data is always read as NHWC

    def __post_init__(self) -> None:
        if self.resize is not None and min(self.resize) < 1:
            raise ValueError(f"resize must be two positive sizes (height, width), got {self.resize}")
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        if (self.mean is None) != (self.std is None):
            raise ValueError("mean and std must be given together")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ValueError(f"std values must be positive, got {self.std}")

    @classmethod
    def from_mapping(cls, data: dict, where: str = "[preprocess]") -> "Preprocess":
        return from_mapping(cls, data, where)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Raw NHWC batch (any numeric dtype) -> float32 model input."""
        x = np.asarray(x)
        if x.ndim == 3:  # N x H x W: grey images without a channel axis
            x = x[..., None]
        x = x.astype(np.float32, copy=False)
        if self.resize is not None and x.shape[1:3] != tuple(self.resize):
            x = resize_bilinear(x, self.resize)
        if self.channels is not None and x.shape[-1] != self.channels:
            x = convert_channels(x, self.channels)
        if self.scale != 1.0 or self.offset != 0.0:
            x = x * np.float32(self.scale) + np.float32(self.offset)
        if self.mean is not None:
            mean = np.asarray(self.mean, np.float32)
            std = np.asarray(self.std, np.float32)
            if mean.size not in (1, x.shape[-1]) or std.size not in (1, x.shape[-1]):
                raise DataError(f"preprocess mean/std have {mean.size}/{std.size} values but the data has "
                                f"{x.shape[-1]} channels", "give one value or one per channel")
            x = (x - mean) / std
        if self.layout == "NCHW" and x.ndim == 4:
            x = np.transpose(x, (0, 3, 1, 2))
        return np.ascontiguousarray(x, dtype=np.float32)


def resize_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an NHWC float batch with half-pixel centres (as tf.image.resize / PIL)."""
    n, h, w, c = x.shape
    oh, ow = size

    def axis(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = (np.arange(dst, dtype=np.float64) + 0.5) * (src / dst) - 0.5
        pos = np.clip(pos, 0, src - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, src - 1)
        return lo, hi, (pos - lo).astype(np.float32)

    y0, y1, wy = axis(h, oh)
    x0, x1, wx = axis(w, ow)
    top = x[:, y0] * (1 - wy)[None, :, None, None] + x[:, y1] * wy[None, :, None, None]
    return top[:, :, x0] * (1 - wx)[None, None, :, None] + top[:, :, x1] * wx[None, None, :, None]


def convert_channels(x: np.ndarray, channels: int) -> np.ndarray:
    have = x.shape[-1]
    if have == 4:  # RGBA: drop alpha first
        x, have = x[..., :3], 3
    if have == channels:
        return x
    if have == 1 and channels == 3:
        return np.repeat(x, 3, axis=-1)
    if have == 3 and channels == 1:
        return (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    raise DataError(f"cannot convert {have}-channel data to {channels} channels")


@dataclass(frozen=True)
class Dataset:
    """A finite sequence of samples read lazily, with optional integer labels.

    ``read(indices)`` returns raw NHWC samples (or a list of single images when their sizes differ); preprocessing
    is applied per batch, so memory use is bounded by the batch size for memory-mapped arrays and image folders.
    """

    source: str
    count: int
    read: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    labels: np.ndarray | None = field(default=None, repr=False)
    preprocess: Preprocess = Preprocess()
    classes: tuple[str, ...] | None = None
    skipped: tuple[tuple[str, str], ...] = ()   # (path, what it is): entries of an image folder that were not read
    label_columns: int | None = None            # the width of one-hot labels, as given (None: class indices)

    @property
    def has_labels(self) -> bool:
        return self.labels is not None

    def with_preprocess(self, preprocess: Preprocess) -> "Dataset":
        return replace(self, preprocess=preprocess)

    def head(self, n: int) -> "Dataset":
        """The first ``n`` samples (or all, if there are fewer)."""
        n = min(n, self.count)
        labels = None if self.labels is None else self.labels[:n]
        return replace(self, count=n, labels=labels)

    def subset(self, indices: np.ndarray, what: str) -> "Dataset":
        """The samples at ``indices`` (in that order), named ``<source> [what]``."""
        indices = np.asarray(indices, dtype=np.int64)
        read = self.read
        return replace(self, source=f"{self.source} [{what}]", count=int(indices.size),
                       read=lambda idx: read(indices[np.asarray(idx, dtype=np.int64)]),
                       labels=None if self.labels is None else self.labels[indices])

    def digests(self, limit: int = 5000, batch_size: int = 256) -> set[bytes]:
        """Content digests of the first ``limit`` raw samples (before preprocessing), to find shared samples."""
        import hashlib

        out: set[bytes] = set()
        total = min(limit, self.count)
        for start in range(0, total, batch_size):
            raw = self.read(np.arange(start, min(start + batch_size, total)))
            for a in (raw if isinstance(raw, list) else list(raw)):
                a = np.ascontiguousarray(a)
                out.add(hashlib.blake2b(a.tobytes() + str(a.shape).encode(), digest_size=16).digest())
        return out

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one preprocessed sample (reads one sample)."""
        return tuple(self._prepare(np.arange(1))[0].shape)

    def _prepare(self, idx: np.ndarray) -> np.ndarray:
        raw = self.read(idx)
        if not isinstance(raw, list):
            return self.preprocess.apply(raw)
        parts = [self.preprocess.apply(a[None]) for a in raw]  # mixed sizes: resize each image, then stack
        shapes = sorted({p.shape[1:] for p in parts})
        if len(shapes) > 1:
            raise DataError(f"{self.source}: images have different sizes ({', '.join(map(str, shapes))})",
                            "set a resize (--resize H,W) and channels (--channels) to bring them to one shape")
        return np.concatenate(parts)

    def batches(self, batch_size: int, limit: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """Preprocessed float32 batches ``(x, y)``; ``y`` is None when unlabelled. Non-finite input is refused."""
        total = self.count if limit is None else min(limit, self.count)
        for start in range(0, total, batch_size):
            idx = np.arange(start, min(start + batch_size, total))
            x = self._prepare(idx)
            bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
            if bad:
                raise DataError(f"{self.source}: {bad} NaN/Inf values in samples {idx[0]}-{idx[-1]}",
                                "clean the data; statistics computed from non-finite values are meaningless")
            yield x, (None if self.labels is None else self.labels[idx])

    def arrays(self, limit: int | None = None, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray | None]:
        """All (or the first ``limit``) preprocessed samples as one array, and their labels."""
        xs, ys = [], []
        for x, y in self.batches(batch_size, limit):
            xs.append(x)
            ys.append(y)
        if not xs:
            raise DataError(f"{self.source}: no samples")
        return np.concatenate(xs), (None if ys[0] is None else np.concatenate(ys))

    def count_non_finite(self, batch_size: int = 512) -> int:
        """Number of NaN/Inf values over the raw data after preprocessing (streamed)."""
        bad = 0
        for start in range(0, self.count, batch_size):
            x = self._prepare(np.arange(start, min(start + batch_size, self.count)))
            bad += int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        return bad


@dataclass(frozen=True)
class DataSpec:
    """Calibration and evaluation data for a run (they may be the same source)."""

    calibration: Dataset
    evaluation: Dataset
    manifest: str | None = None

    @property
    def shared(self) -> bool:
        return self.calibration.source == self.evaluation.source

    def overlap(self, limit: int = 5000) -> int:
        """How many of the (first ``limit``) evaluation samples also appear in the calibration data, by content."""
        if self.shared:
            return min(limit, self.evaluation.count)
        calibration = self.calibration.digests(limit)
        return sum(1 for d in self.evaluation.digests(limit) if d in calibration)


def split_dataset(ds: Dataset, fraction: float, seed: int = 0) -> tuple[Dataset, Dataset]:
    """(calibration, evaluation): ``fraction`` of the samples held out for evaluation, per class when labelled
    (so both parts keep the class balance), chosen with a fixed seed so every run splits the same way."""
    if not 0.0 < fraction < 1.0:
        raise InputError(f"--split {fraction:g} must be a fraction between 0 and 1 (exclusive)",
                         "e.g. --split 0.3 holds out 30 % of the samples for evaluation")
    rng = np.random.default_rng(seed)
    groups = [np.arange(ds.count)] if ds.labels is None else \
        [np.flatnonzero(ds.labels == c) for c in np.unique(ds.labels)]
    held = []
    for g in groups:
        k = int(round(fraction * len(g)))
        if len(g) >= 2:
            k = min(max(k, 1), len(g) - 1)
        held.append(rng.permutation(g)[:k])
    evaluation = np.sort(np.concatenate(held)) if held else np.array([], dtype=np.int64)
    keep = np.ones(ds.count, dtype=bool)
    keep[evaluation] = False
    calibration = np.flatnonzero(keep)
    if evaluation.size == 0 or calibration.size == 0:
        raise DataError(f"{ds.source}: {ds.count} samples cannot be split {1 - fraction:.0%} / {fraction:.0%}",
                        "give more samples, or separate calibration and evaluation data")
    pct = f"{100 * fraction:g} %"
    return (ds.subset(calibration, f"calibration split: {calibration.size} samples, {100 - 100 * fraction:g} %"),
            ds.subset(evaluation, f"evaluation split: {evaluation.size} samples, {pct}"))


def load_dataset(path: str | Path, preprocess: Preprocess = Preprocess(),
                 max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Dataset:
    """Open an ``.npz``, ``.npy`` or image folder as a ``Dataset``; images above ``max_image_pixels`` are refused."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"data not found: {path}", "check the path given to --data")
    if path.is_dir():
        ds = _image_folder(path, max_image_pixels)
    elif path.suffix == ".npz":
        ds = _npz(path)
    elif path.suffix == ".npy":
        ds = _npy(path)
    else:
        raise InputError(f"unsupported data format '{path.suffix or path.name}' ({path})",
                         "use an .npz with array 'x' (and 'y'), an .npy, a folder of images, or a .toml manifest")
    if ds.count == 0:
        raise DataError(f"{path}: the data set is empty", "give at least one sample")
    return replace(ds, preprocess=preprocess)


def _check_images(arr: np.ndarray, path: Path) -> None:
    if arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[-1] not in (1, 2, 3, 4) and arr.shape[1] in (1, 3)):
        hint = "store images as N x H x W x C (NHWC)"
        if arr.ndim == 4 and arr.shape[1] in (1, 3):
            hint += f"; this looks like NCHW {arr.shape}: transpose with x.transpose(0, 2, 3, 1)"
        raise DataError(f"{path}: images must be N x H x W x C, got shape {arr.shape}", hint)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise DataError(f"{path}: images must be numeric, got dtype {arr.dtype}")


def _labels(y: np.ndarray, n: int, path: Path) -> tuple[np.ndarray, int | None]:
    """Integer class indices (int64) from ``y``, and the width of ``y`` when it was one-hot (else None)."""
    y = np.asarray(y)
    hint = "store one integer class index per image (0 .. classes-1)"
    if not (np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_):
        raise DataError(f"{path}: labels must be integer class indices, got dtype {y.dtype}", hint)
    columns = None
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot: exactly one 1 per row, zeros elsewhere
        rows = np.flatnonzero(~(np.isin(y, (0, 1)).all(axis=1) & (np.sum(y == 1, axis=1) == 1)))
        if rows.size:
            raise DataError(f"{path}: labels are {y.shape[0]} x {y.shape[1]} but not one-hot (row {rows[0]} is "
                            f"{np.array2string(y[rows[0]][:12], precision=3, separator=', ')}"
                            f"{' ...' if y.shape[1] > 12 else ''})",
                            "give one integer class index per image, or one-hot rows (a single 1 in each)")
        y, columns = np.argmax(y, axis=1), y.shape[1]
    y = y.reshape(-1)
    if len(y) != n:
        raise DataError(f"{path}: {n} images but {len(y)} labels", "give one label per image")
    if np.issubdtype(y.dtype, np.unsignedinteger) and y.size and y.max() > np.iinfo(np.int64).max:
        raise DataError(f"{path}: label {y.max()} is not a class index (above 2**63)", hint)
    if not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_):
        with np.errstate(invalid="ignore"):
            bad = np.flatnonzero(~np.isfinite(y) | (np.mod(y, 1) != 0) | (np.abs(y) > 2.0 ** 53))
        if len(bad):
            raise DataError(f"{path}: labels must be integer class indices, got {y[bad[0]].item()!r} at sample "
                            f"{bad[0]} ({len(bad):,} of {len(y):,} labels are not)", hint)
    return y.astype(np.int64), columns


def _npz(path: Path) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as z:
            if "x" not in z.files:
                raise DataError(f"{path}: no array named 'x' (found: {', '.join(z.files) or 'none'})",
                                "save images as x (NHWC) and labels as y: np.savez(path, x=images, y=labels)")
            x = z["x"]
            y = z["y"] if "y" in z.files else None
            classes = tuple(str(c) for c in z["classes"]) if "classes" in z.files else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: cannot read the .npz ({exc})", "check the file is a complete numpy .npz") from None
    _check_images(x, path)
    labels, columns = (None, None) if y is None else _labels(y, len(x), path)
    return Dataset(str(path), len(x), lambda idx, _x=x: _x[idx], labels, classes=classes, label_columns=columns)


def _npy(path: Path) -> Dataset:
    try:
        x = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the .npy ({exc})", "check the file is a complete numpy .npy") from None
    _check_images(x, path)
    return Dataset(str(path), len(x), lambda idx, _x=x: np.asarray(_x[idx]))


def _not_regular(mode: int) -> str | None:
    """What a file of this ``st_mode`` is when it is not a regular file (None for a regular file)."""
    if stat.S_ISREG(mode):
        return None
    for test, what in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return what
    return "not a regular file"


def _image_files(candidates, skipped: list[tuple[str, str]]) -> list[Path]:
    """The regular files (or symbolic links to them) among ``candidates`` with an image suffix, sorted. Nothing is
    opened: FIFOs, sockets and devices go to ``skipped``; directories are left out (their images are listed)."""
    files = []
    for p in sorted(c for c in candidates if c.suffix.lower() in IMAGE_SUFFIXES):
        try:
            mode = os.stat(p).st_mode                       # follows symbolic links; never opens the file
        except OSError as exc:
            what = "a broken symbolic link" if p.is_symlink() else "cannot look the file up"
            raise DataError(f"{p}: {what} ({exc.strerror})", "remove or replace the file") from None
        what = _not_regular(mode)
        if what is None:
            files.append(p)
        elif not stat.S_ISDIR(mode):
            skipped.append((str(p), what + (" (through a symbolic link)" if p.is_symlink() else "")))
    return files


def _image_folder(path: Path, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Dataset:
    subdirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    files: list[Path] = []
    labels: list[int] | None = None
    classes: tuple[str, ...] | None = None
    skipped: list[tuple[str, str]] = []
    if subdirs:
        labels, classes = [], tuple(d.name for d in subdirs)
        for i, d in enumerate(subdirs):
            imgs = _image_files(d.rglob("*"), skipped)
            files += imgs
            labels += [i] * len(imgs)
    else:
        files = _image_files(path.iterdir(), skipped)
    if not files:
        found = f"; skipped {_skipped_text(skipped)}" if skipped else ""
        raise DataError(f"{path}: no images found (looked for regular files named "
                        f"{', '.join('*' + s for s in sorted(IMAGE_SUFFIXES))}{found})",
                        "put images in the folder, or one subfolder per class")

    def read(idx: np.ndarray) -> np.ndarray:
        out = [_read_image(files[i], max_pixels) for i in idx]
        out = [a if a.ndim == 3 else a[..., None] for a in out]
        return out if len({a.shape for a in out}) > 1 else np.stack(out)

    return Dataset(str(path), len(files), read, None if labels is None else np.asarray(labels, np.int64),
                   classes=classes, skipped=tuple(skipped))


def _skipped_text(skipped, limit: int = 3) -> str:
    shown = ", ".join(f"{p} ({what})" for p, what in skipped[:limit])
    return shown + (f" and {len(skipped) - limit} more" if len(skipped) > limit else "")


def _read_image(file: Path, max_pixels: int) -> np.ndarray:
    """One image as uint8 (or wider) H x W [x C]. Refuses a file that is no longer regular, an image above
    ``max_pixels`` (checked from its header, before decoding) and anything Pillow cannot decode, naming the file."""
    from PIL import Image, UnidentifiedImageError

    fix = "remove or replace the file"
    try:  # O_NONBLOCK: should the file have been replaced by a FIFO since it was listed, opening does not block
        fd = os.open(file, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise DataError(f"{file}: cannot open the image ({exc.strerror})", fix) from None
    with os.fdopen(fd, "rb") as fh:
        what = _not_regular(os.fstat(fd).st_mode)
        if what is not None:
            raise DataError(f"{file}: {what}, not an image file", "read regular files only: remove it")
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None       # the limit is checked below, with a message naming the file and the fix
        try:
            with Image.open(fh) as im:
                width, height = im.size
                if width * height > max_pixels:
                    raise DataError(f"{file}: image is {width} x {height} = {width * height:,} pixels, above the "
                                    f"limit of {max_pixels:,} pixels (a decompression bomb?)",
                                    f"shrink or remove the image, or raise the limit: max_image_pixels = "
                                    f"{width * height} in a data manifest (.toml) given as --data")
                im = im.convert("L") if im.mode in ("L", "1", "I;16", "I", "F") else im.convert("RGB")
                return np.asarray(im)
        except UnidentifiedImageError:
            raise DataError(f"{file}: not an image Pillow can read (unknown or damaged format)", fix) from None
        except (OSError, ValueError, SyntaxError, EOFError, struct.error) as exc:   # what decoders raise on bad data
            detail = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise DataError(f"{file}: unreadable image ({detail})", fix) from None
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def preprocess_from(*layers: dict | None) -> Preprocess:
    """Merge preprocessing tables, later ones winning key by key (target < data manifest < command line)."""
    merged: dict = {}
    for layer in layers:
        if layer:
            merged = merge(merged, layer)
    return Preprocess.from_mapping(merged)


@dataclass(frozen=True)
class DataManifest:
    calibration: str
    evaluation: str | None = None
    preprocess: dict = field(default_factory=dict)
    description: str = ""
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS   # larger images in an image folder are refused
    split: float | None = None       # one source: hold out this fraction for evaluation (the rest calibrates)

    def __post_init__(self) -> None:
        if self.split is not None and self.evaluation is not None:
            raise ValueError("split holds evaluation samples out of the calibration data: give either split or "
                             "evaluation, not both")
        if self.split is not None and not 0 < self.split < 1:
            raise ValueError(f"split must be a fraction between 0 and 1, got {self.split}")
        if self.max_image_pixels < 1:
            raise ValueError(f"max_image_pixels must be a positive number of pixels, got {self.max_image_pixels}")


def load_data(path: str | Path, *, preprocess_layers: tuple[dict | None, ...] = (),
              cli_preprocess: dict | None = None, calibration: str | Path | None = None,
              split: float | None = None) -> DataSpec:
    """Resolve ``--data`` (a manifest or a single source) into calibration and evaluation datasets.

    Preprocessing precedence: ``preprocess_layers`` (e.g. the target profile) < the manifest < ``cli_preprocess``.
    ``split`` (or the manifest's) divides one source into a calibration part and a held-out evaluation part.
    """
    path = Path(path)
    manifest_pre: dict | None = None
    manifest_name = None
    max_pixels = DEFAULT_MAX_IMAGE_PIXELS
    if path.suffix == ".toml":
        if not path.exists():
            raise InputError(f"data manifest not found: {path}", "check the path given to --data")
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML ({exc})", "fix the syntax of the data manifest") from None
        man = from_mapping(DataManifest, raw, str(path))
        calib_path = (path.parent / man.calibration)
        eval_path = (path.parent / man.evaluation) if man.evaluation else calib_path
        manifest_pre, manifest_name, max_pixels = man.preprocess, str(path), man.max_image_pixels
        if split is None and man.split is not None:
            split = man.split
        elif split is not None and man.evaluation:
            raise InputError(f"--split divides one data source, but {path} already gives separate calibration and "
                             "evaluation data", "drop --split, or the manifest's evaluation entry")
    else:
        calib_path = eval_path = path
    if calibration is not None:
        if split is not None:
            raise InputError("--split and --calib-data both choose the calibration data",
                             "give one of them: --split divides --data, --calib-data names another source")
        calib_path = Path(calibration)
    pre = preprocess_from(*preprocess_layers, manifest_pre, cli_preprocess)
    ev = load_dataset(eval_path, pre, max_pixels)
    if split is not None:
        cal, ev = split_dataset(ev, split)
        return DataSpec(calibration=cal, evaluation=ev, manifest=manifest_name)
    cal = ev if calib_path == eval_path else load_dataset(calib_path, pre, max_pixels)
    return DataSpec(calibration=cal, evaluation=ev, manifest=manifest_name)


def scaling_warnings(ds: Dataset, sample: int = 64) -> list[str]:
    """Warn when preprocessing divides data that is already scaled: float pixels in [0, 1] given ``scale`` 1/255
    become values below 0.004, which a model trained on [0, 1] silently misreads (top-1 near chance)."""
    pre = ds.preprocess
    if not (0 < abs(pre.scale) <= 0.01):
        return []
    raw = ds.read(np.arange(min(sample, ds.count)))
    arrays = raw if isinstance(raw, list) else [raw]
    if not all(np.issubdtype(np.asarray(a).dtype, np.floating) for a in arrays):
        return []
    peak = max(float(np.max(np.abs(a))) for a in arrays)
    if peak > 1.0:
        return []
    return [f"{ds.source}: the data is already float in [0, {peak:.3g}] and preprocessing multiplies it by "
            f"{pre.scale:.6g}; if it was scaled before saving, remove `scale` (manifest, target [preprocess] or "
            "--scale), or save the raw pixels"]


def read_warnings(ds: Dataset) -> list[str]:
    """Warnings about how ``ds`` was read: entries of an image folder that were skipped (FIFOs, sockets, devices)."""
    if not ds.skipped:
        return []
    return [f"{ds.source}: skipped {len(ds.skipped)} entr{'y' if len(ds.skipped) == 1 else 'ies'} that "
            f"{'is' if len(ds.skipped) == 1 else 'are'} not a regular file: {_skipped_text(ds.skipped)}"]


def describe(ds: Dataset) -> dict:
    """A JSON-ready description of a dataset for reports (with the entries skipped, when there are any)."""
    out = {"source": ds.source, "samples": ds.count, "labelled": ds.has_labels,
           "preprocess": to_mapping(ds.preprocess)}
    if ds.skipped:
        out["skipped"] = [{"path": p, "reason": what} for p, what in ds.skipped]
    return out


def check_labels(ds: Dataset, output_shape: tuple[int | None, ...], what: str = "the model") -> None:
    """Refuse labels that name no output of the model: top-1 would score them as silent misses.

    ``output_shape`` is one sample's output (batch axis excluded); its outputs are the classes, as top-1 counts them
    (flattened). Nothing is checked when the shape is not known yet (a dynamic axis) or the data has no labels.
    """
    known = all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0 for d in output_shape)
    if ds.labels is None or not len(ds.labels) or not known:
        return
    classes = int(math.prod(output_shape))
    fix = "fix the labels or the model"
    if ds.label_columns is not None and ds.label_columns != classes:
        raise DataError(f"labels in {ds.source} are one-hot over {ds.label_columns} classes but {what} has "
                        f"{classes} outputs", fix)
    lo, hi = int(ds.labels.min()), int(ds.labels.max())
    if lo >= 0 and hi < classes:
        return
    outside = int(np.count_nonzero((ds.labels < 0) | (ds.labels >= classes)))
    folders = f" ({len(ds.classes)} class folders)" if ds.classes is not None and Path(ds.source).is_dir() else ""
    raise DataError(f"labels in {ds.source}{folders} range from {lo} to {hi} but {what} has {classes} outputs "
                    f"(classes 0..{classes - 1}); {outside:,} of {len(ds.labels):,} labels are outside", fix)


def check_fits(ds: Dataset, expected: tuple[int | None, ...], what: str = "the model") -> None:
    """Refuse data whose preprocessed sample shape does not match the model input (batch axis excluded)."""
    got = ds.sample_shape
    if len(got) == len(expected) and all(e is None or e == g for e, g in zip(expected, got)):
        return
    shown = "x".join("?" if e is None else str(e) for e in expected)
    hint = "preprocess the data to the model's input shape"
    if len(expected) == 3 and len(got) == 3:
        nhwc = expected if ds.preprocess.layout == "NHWC" else (expected[1], expected[2], expected[0])
        ch = nhwc[2] if ds.preprocess.layout == "NHWC" else expected[0]
        flips = []
        if ds.preprocess.layout == "NHWC" and expected[0] in (1, 3) and expected[2] not in (1, 3):
            flips.append("--layout NCHW")
        if nhwc[0] and nhwc[1]:
            flips.append(f"--resize {nhwc[0]},{nhwc[1]}")
        if ch in (1, 3):
            flips.append(f"--channels {ch}")
        if flips:
            hint = "set " + " ".join(flips) + " (or [preprocess] in the target or data manifest)"
    raise DataError(f"{ds.source}: samples are {'x'.join(map(str, got))} after preprocessing but {what} expects "
                    f"{shown}", hint)


def batch_count(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)

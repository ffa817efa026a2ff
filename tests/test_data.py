"""Data loading and preprocessing on the committed Fashion-MNIST subsets and on real image files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import DATA_DIR, MANIFEST
from PIL import Image
from test_bad_input import write_bomb_png

from edgeprep.data import (
    Preprocess,
    check_fits,
    check_labels,
    describe,
    load_data,
    load_dataset,
    read_warnings,
    resize_bilinear,
    scaling_warnings,
)
from edgeprep.errors import ConfigError, DataError, InputError


def test_manifest_gives_calibration_and_evaluation_with_labels():
    spec = load_data(MANIFEST)
    assert (spec.calibration.count, spec.evaluation.count) == (1000, 2000)
    assert not spec.shared and spec.evaluation.has_labels
    x, y = spec.evaluation.arrays(limit=300)
    assert x.dtype == np.float32 and x.shape == (300, 28, 28, 1)
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.9  # scale 1/255 from the manifest
    assert set(np.unique(y)) <= set(range(10))
    assert spec.evaluation.classes[0] == "T-shirt/top"


def test_committed_subsets_are_class_balanced(eval_npz, calib_npz):
    assert np.bincount(eval_npz["y"]).tolist() == [200] * 10
    assert np.bincount(calib_npz["y"]).tolist() == [100] * 10
    assert eval_npz["x"].shape == (2000, 28, 28, 1) and eval_npz["x"].dtype == np.uint8


def test_batches_stream_in_order(eval_npz):
    ds = load_dataset(DATA_DIR / "fashion_mnist_eval.npz")
    got = np.concatenate([x for x, _ in ds.batches(64, limit=200)])
    np.testing.assert_array_equal(got, eval_npz["x"][:200].astype(np.float32))


def test_npy_is_memory_mapped_and_unlabelled(tmp_path, eval_npz):
    np.save(tmp_path / "x.npy", eval_npz["x"][:50])
    ds = load_dataset(tmp_path / "x.npy", Preprocess(scale=1 / 255))
    assert ds.count == 50 and not ds.has_labels
    x, y = ds.arrays()
    assert y is None and np.allclose(x, eval_npz["x"][:50] / 255.0)


def _write_pngs(folder, images, labels=None):
    for i, img in enumerate(images):
        d = folder / f"class_{labels[i]}" if labels is not None else folder
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[..., 0]).save(d / f"{i:04d}.png")


def test_image_folder_with_class_subfolders(tmp_path, eval_npz):
    imgs, labels = eval_npz["x"][:40], eval_npz["y"][:40]
    _write_pngs(tmp_path, imgs, labels)
    ds = load_dataset(tmp_path)
    assert ds.count == 40 and ds.has_labels
    assert ds.classes == tuple(sorted(f"class_{c}" for c in set(labels.tolist())))
    x, y = ds.arrays()
    # every image must come back with the label of the folder it sits in
    for xi, yi in zip(x, y):
        idx = next(i for i in range(40) if np.array_equal(imgs[i].astype(np.float32), xi))
        assert ds.classes[yi] == f"class_{labels[idx]}"


def test_flat_image_folder_is_unlabelled_and_resizes_to_rgb(tmp_path, eval_npz):
    _write_pngs(tmp_path, eval_npz["x"][:5])
    Image.fromarray(np.full((40, 30), 200, np.uint8)).save(tmp_path / "zz_other_size.png")
    with pytest.raises(DataError, match="different sizes"):
        load_dataset(tmp_path).arrays()
    ds = load_dataset(tmp_path, Preprocess(resize=(32, 32), channels=3, scale=1 / 255))
    x, y = ds.arrays()
    assert y is None and x.shape == (6, 32, 32, 3)
    assert np.allclose(x[..., 0], x[..., 2])  # grey -> RGB repeats the channel


def test_resize_matches_tensorflow():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.random((2, 28, 28, 3)).astype(np.float32)
    for size in [(32, 32), (14, 20), (56, 28)]:
        want = tf.image.resize(x, size, method="bilinear", antialias=False).numpy()
        np.testing.assert_allclose(resize_bilinear(x, size), want, atol=1e-5)


def test_mean_std_and_nchw_layout():
    x = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
    p = Preprocess(scale=0.5, offset=1.0, mean=(1.0, 2.0, 3.0), std=(2.0, 2.0, 4.0), layout="NCHW")
    got = p.apply(x)
    want = ((x * 0.5 + 1.0) - np.array([1, 2, 3])) / np.array([2, 2, 4])
    np.testing.assert_allclose(got, want.transpose(0, 3, 1, 2), rtol=1e-6)


def test_preprocess_precedence_target_then_manifest_then_cli():
    spec = load_data(MANIFEST, preprocess_layers=({"scale": 2.0, "offset": 5.0},), cli_preprocess={"offset": 1.0})
    assert spec.evaluation.preprocess.scale == pytest.approx(1 / 255)   # manifest beats target
    assert spec.evaluation.preprocess.offset == 1.0                     # CLI beats both


def test_non_finite_values_are_refused_with_a_count(tmp_path):
    x = np.zeros((10, 8, 8, 1), np.float32)
    x[3, 0, 0, 0] = np.nan
    x[7, 1, 1, 0] = np.inf
    np.savez(tmp_path / "bad.npz", x=x)
    ds = load_dataset(tmp_path / "bad.npz")
    assert ds.count_non_finite() == 2
    with pytest.raises(DataError, match="2 NaN/Inf values"):
        ds.arrays()


@pytest.mark.parametrize("make, error, fragment", [
    (lambda p: np.savez(p / "d.npz", images=np.zeros((2, 8, 8, 1))), DataError, "no array named 'x'"),
    (lambda p: np.savez(p / "d.npz", x=np.zeros((0, 8, 8, 1))), DataError, "empty"),
    (lambda p: np.savez(p / "d.npz", x=np.zeros((3, 8, 8, 1)), y=[1, 2]), DataError, "3 images but 2 labels"),
    (lambda p: np.savez(p / "d.npz", x=np.zeros((3, 3, 8, 8))), DataError, "looks like NCHW"),
    (lambda p: (p / "d.npz").write_bytes(b"PK\x03\x04 truncated"), DataError, "cannot read the .npz"),
    (lambda p: (p / "d.csv").write_text("1,2"), InputError, "unsupported data format '.csv'"),
])
def test_bad_data_gives_one_clear_error(tmp_path, make, error, fragment):
    make(tmp_path)
    path = next(tmp_path.iterdir())
    with pytest.raises(error) as err:
        load_dataset(path)
    assert fragment in str(err.value)


def test_empty_image_folder_and_missing_path(tmp_path):
    with pytest.raises(DataError, match="no images found"):
        load_dataset(tmp_path)
    with pytest.raises(InputError, match="data not found"):
        load_dataset(tmp_path / "nope.npz")


def test_shape_mismatch_suggests_the_fix():
    ds = load_dataset(DATA_DIR / "fashion_mnist_eval.npz")
    with pytest.raises(DataError) as err:
        check_fits(ds, (32, 32, 3))
    assert "28x28x1" in str(err.value) and "--resize 32,32" in err.value.hint and "--channels 3" in err.value.hint
    with pytest.raises(DataError) as err:
        check_fits(ds, (1, 28, 28))
    assert "--layout NCHW" in err.value.hint
    check_fits(ds.with_preprocess(Preprocess(layout="NCHW")), (1, 28, 28))


def test_bad_manifest(tmp_path):
    (tmp_path / "m.toml").write_text('calibration = "c.npz"\nevalutaion = "e.npz"\n')
    with pytest.raises(ConfigError, match="unknown key 'evalutaion'"):
        load_data(tmp_path / "m.toml")


def test_double_scaling_is_warned_about(tmp_path, eval_npz):
    np.savez(tmp_path / "scaled.npz", x=eval_npz["x"][:20].astype(np.float32) / 255.0)
    np.savez(tmp_path / "raw.npz", x=eval_npz["x"][:20])
    already = load_dataset(tmp_path / "scaled.npz", Preprocess(scale=1 / 255))
    [warning] = scaling_warnings(already)
    assert "already float in [0, 1]" in warning and "remove `scale`" in warning
    assert scaling_warnings(load_dataset(tmp_path / "raw.npz", Preprocess(scale=1 / 255))) == []
    assert scaling_warnings(load_dataset(tmp_path / "scaled.npz")) == []


def test_committed_data_is_rebuilt_bit_for_bit_from_the_debian_package(tmp_path):
    """calibration_data/ must be exactly what its committed script makes from dataset-fashion-mnist."""
    import subprocess
    import sys

    from conftest import ROOT, require

    source = Path("/usr/share/datasets/fashion-mnist")
    require((source / "train-images-idx3-ubyte.gz").exists(), "Debian package dataset-fashion-mnist")
    subprocess.run([sys.executable, str(ROOT / "calibration_data" / "build_fashion_mnist.py"), "--out",
                    str(tmp_path)], check=True, capture_output=True)
    for name in ("fashion_mnist_calib.npz", "fashion_mnist_eval.npz"):
        with np.load(tmp_path / name) as rebuilt, np.load(DATA_DIR / name) as committed:
            assert rebuilt.files == committed.files
            for key in committed.files:
                np.testing.assert_array_equal(rebuilt[key], committed[key], err_msg=f"{name}:{key}")


# ---------------------------------------------------------------- hostile and broken input (issue 12)


def test_image_folder_reads_regular_files_only(tmp_path, eval_npz):
    """A FIFO (or a link to one) would block the reader forever; sockets and devices must not be opened either."""
    import os
    import socket

    _write_pngs(tmp_path, eval_npz["x"][:4])
    os.mkfifo(tmp_path / "0000_pipe.png")
    os.symlink(tmp_path / "0000_pipe.png", tmp_path / "0001_to_pipe.png")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "0002_socket.png"))
    os.symlink(tmp_path / "0003.png", tmp_path / "zz_link_to_image.png")     # a link to a regular file is read
    (tmp_path / ".hidden.png").mkdir()   # a directory with an image suffix is no image (a visible one: a class)
    try:
        ds = load_dataset(tmp_path)
        assert ds.count == 5                          # checked before any read: a regression fails, not hangs
        assert [(Path(p).name, why) for p, why in ds.skipped] == [
            ("0000_pipe.png", "a FIFO"), ("0001_to_pipe.png", "a FIFO (through a symbolic link)"),
            ("0002_socket.png", "a socket")]
        x, _ = ds.arrays()
        np.testing.assert_array_equal(x[-1], x[3])   # the symbolic link reads the image it points to
        [warning] = read_warnings(ds)
        assert "skipped 3 entries that are not a regular file" in warning and "0000_pipe.png (a FIFO)" in warning
        assert [Path(s["path"]).name for s in describe(ds)["skipped"]] == ["0000_pipe.png", "0001_to_pipe.png",
                                                                           "0002_socket.png"]
        assert "skipped" not in describe(load_dataset(DATA_DIR / "fashion_mnist_eval.npz"))
    finally:
        sock.close()


def test_image_folder_of_non_regular_files_only_is_an_error(tmp_path):
    import os

    os.mkfifo(tmp_path / "a.png")
    with pytest.raises(DataError) as err:
        load_dataset(tmp_path)
    assert "no images found" in str(err.value) and "skipped " + str(tmp_path / "a.png (a FIFO)") in str(err.value)
    os.symlink(tmp_path / "gone.png", tmp_path / "b.png")
    with pytest.raises(DataError, match="b.png: a broken symbolic link"):
        load_dataset(tmp_path)


def test_decompression_bomb_is_refused_before_decoding(tmp_path, eval_npz):
    import resource

    _write_pngs(tmp_path, eval_npz["x"][:2])
    write_bomb_png(tmp_path / "0001_bomb.png")
    assert (tmp_path / "0001_bomb.png").stat().st_size < 200_000
    ds = load_dataset(tmp_path)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(DataError) as err:
        ds.arrays()
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000     # KB: nothing was decoded
    msg = str(err.value)
    assert "0001_bomb.png: image is 30000 x 30000 = 900,000,000 pixels, above the limit of 89,478,485" in msg
    assert "max_image_pixels = 900000000 in a data manifest" in msg


def test_max_image_pixels_is_set_in_the_data_manifest(tmp_path, eval_npz, monkeypatch):
    from PIL import Image

    _write_pngs(tmp_path / "images", eval_npz["x"][:3])
    (tmp_path / "m.toml").write_text('calibration = "images"\nmax_image_pixels = 500\n')
    with pytest.raises(DataError, match=r"image is 28 x 28 = 784 pixels, above the limit of 500 pixels"):
        load_data(tmp_path / "m.toml").calibration.arrays()
    # edgeprep's limit decides, not Pillow's global one (which it leaves as it found it)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    (tmp_path / "m.toml").write_text('calibration = "images"\nmax_image_pixels = 1000\n')
    assert load_data(tmp_path / "m.toml").calibration.arrays()[0].shape == (3, 28, 28, 1)
    assert Image.MAX_IMAGE_PIXELS == 100
    for bad, fragment in (("0", "max_image_pixels must be a positive number"), ("2.5e8", "expected an integer")):
        (tmp_path / "m.toml").write_text(f'calibration = "images"\nmax_image_pixels = {bad}\n')
        with pytest.raises(ConfigError, match=fragment):
            load_data(tmp_path / "m.toml")


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]


@pytest.mark.parametrize("name, damage, fragment", [
    ("zz.png", lambda b: b[:len(b) // 2], "unreadable image (image file is truncated)"),
    ("zz.png", lambda b: b"not an image at all", "not an image Pillow can read"),
    ("zz.png", lambda b: b"", "not an image Pillow can read"),
    ("zz.png", lambda b: _flip(b, b.find(b"IDAT") + 8), "unreadable image (broken data stream"),
    ("zz.ppm", lambda b: b"P5\n28 2k\n255\n" + bytes(784), "unreadable image (invalid literal for int()"),
])
def test_damaged_image_is_one_error_naming_the_file(tmp_path, eval_npz, name, damage, fragment):
    _write_pngs(tmp_path, eval_npz["x"][:2])
    (tmp_path / name).write_bytes(damage((tmp_path / "0000.png").read_bytes()))
    with pytest.raises(DataError) as err:
        load_dataset(tmp_path).arrays()
    assert str(err.value).startswith(f"{tmp_path / name}: ") and fragment in str(err.value)
    assert "\n" not in str(err.value)


def _labelled(tmp_path, y, n=6):
    np.savez(tmp_path / "d.npz", x=np.zeros((n, 8, 8, 1), np.uint8), y=np.asarray(y))
    return tmp_path / "d.npz"


@pytest.mark.parametrize("y, fragment", [
    ([0, 1, 2, 3, 4, 99], "range from 0 to 99 but the model (m.keras) has 10 outputs (classes 0..9); 1 of 6"),
    ([-1, 1, 2, 3, 4, 5], "range from -1 to 5 but the model (m.keras) has 10 outputs (classes 0..9)"),
    (np.eye(5)[[0, 1, 2, 3, 4, 0]], "are one-hot over 5 classes but the model (m.keras) has 10 outputs"),
])
def test_labels_out_of_range_for_the_model_are_refused(tmp_path, y, fragment):
    ds = load_dataset(_labelled(tmp_path, y))
    with pytest.raises(DataError) as err:
        check_labels(ds, (10,), "the model (m.keras)")
    assert fragment in str(err.value) and err.value.hint == "fix the labels or the model"
    check_labels(ds, (None,), "a model with a dynamic output")           # not known yet: checked from outputs
    check_labels(load_dataset(_labelled(tmp_path, [0, 1, 2, 9, 9, 0])), (10,))
    check_labels(load_dataset(_labelled(tmp_path, np.eye(10)[[0, 1, 2, 9, 9, 0]])), (10,))


@pytest.mark.parametrize("y, fragment", [
    ([0, 1, 2.5, 3, 4, 5], "labels must be integer class indices, got 2.5 at sample 2 (1 of 6 labels are not)"),
    ([0, 1, np.nan, 3, 4, 5], "got nan at sample 2"),
    (["a", "b", "c", "d", "e", "f"], "labels must be integer class indices, got dtype <U1"),
    (np.array([2 ** 64 - 1] * 6, np.uint64), "is not a class index (above 2**63)"),
    (np.full((6, 10), 0.1), "labels are 6 x 10 but not one-hot (row 0 is"),
])
def test_labels_that_are_no_class_index_are_refused(tmp_path, y, fragment):
    with pytest.raises(DataError) as err:
        load_dataset(_labelled(tmp_path, y))
    assert fragment in str(err.value)


def test_class_folders_beyond_the_model_outputs_are_refused(tmp_path, eval_npz):
    _write_pngs(tmp_path, eval_npz["x"][:12], labels=list(range(12)))
    ds = load_dataset(tmp_path)
    with pytest.raises(DataError, match=r"\(12 class folders\) range from 0 to 11 but the model has 10 outputs"):
        check_labels(ds, (10,))

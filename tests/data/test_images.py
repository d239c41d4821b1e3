"""Image streams: class-incremental windows hold their classes, domain windows really change the images."""

import sys
import types
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from perennial.data import DataError, DigitsStream, FashionMNISTStream

# Every test that reads Fashion-MNIST wears this mark: the files come from a Debian package (`make data`
# installs it as root), and a machine without them, offline, must still pass `make test`.
FASHION_ROOT = Path(FashionMNISTStream.root)
needs_fashion = pytest.mark.skipif(
    not all(
        (FASHION_ROOT / f"{part}-{kind}-ubyte.gz").is_file()
        for part in ("train", "t10k")
        for kind in ("images-idx3", "labels-idx1")
    ),
    reason=f"Fashion-MNIST files absent from {FASHION_ROOT}: run `make data` "
    "(sudo apt-get install dataset-fashion-mnist)",
)


def test_digits_class_incremental_windows_hold_two_new_classes_each():
    stream = DigitsStream("class_incremental", classes_per_window=2)
    windows = stream.windows()
    assert [sorted(np.unique(w.y).tolist()) for w in windows] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert sum(len(w) for w in windows) == 1797
    assert stream.classes == list(range(10)) and stream.feature_shape == (1, 8, 8)
    for w in windows:
        assert w.x.dtype == np.float32 and w.x.shape == (len(w), 1, 8, 8)
        assert w.x.min() >= 0.0 and w.x.max() <= 1.0
    np.testing.assert_array_equal(np.concatenate([w.time for w in windows]), np.arange(1797))


def test_digits_rotated_windows_are_disjoint_shares_of_rotated_images():
    windows = DigitsStream("rotated", n_windows=4).windows()
    assert len(windows) == 4 and sum(len(w) for w in windows) == 1797
    originals = {img.tobytes() for img in (load_digits().images / 16.0).astype(np.float32)}
    assert all(img.tobytes() in originals for img in windows[0].x[:, 0])  # window 0 is not rotated
    assert not any(img.tobytes() in originals for img in windows[3].x[:, 0] if img.any())
    mean = [w.x.mean(axis=0)[0] for w in windows]
    assert np.abs(mean[3] - np.rot90(mean[0])).mean() < np.abs(mean[3] - mean[0]).mean() / 3  # 90 degrees


def test_digits_permuted_windows_shuffle_pixels_but_keep_them():
    windows = DigitsStream("permuted", n_windows=3, seed=1).windows()
    mean = [w.x.mean(axis=0).ravel() for w in windows]
    assert np.abs(mean[1] - mean[0]).mean() > 0.1
    np.testing.assert_allclose(np.sort(mean[1]), np.sort(mean[0]), atol=0.05)


def test_same_seed_same_windows():
    a, b = DigitsStream("rotated", seed=5).windows(), DigitsStream("rotated", seed=5).windows()
    np.testing.assert_array_equal(a[2].x, b[2].x)


def test_unknown_scenario_lists_accepted_values():
    with pytest.raises(ValueError, match=r"class_incremental.*rotated.*permuted"):
        DigitsStream("split")
    with pytest.raises(ValueError, match=r"class_incremental.*rotated.*permuted"):
        FashionMNISTStream("split")


def test_fashion_mnist_without_files_or_network_says_how_to_get_them(tmp_path: Path, monkeypatch):
    def offline(*args, **kwargs):
        raise RuntimeError("no network")

    # a stand-in for torchvision whose download fails as it does offline (and spares a slow import)
    datasets = types.ModuleType("torchvision.datasets")
    datasets.FashionMNIST = offline
    monkeypatch.setitem(sys.modules, "torchvision", types.ModuleType("torchvision"))
    monkeypatch.setitem(sys.modules, "torchvision.datasets", datasets)
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        FashionMNISTStream(root=str(tmp_path), download_root=str(tmp_path / "download"))


@needs_fashion
def test_fashion_mnist_class_incremental_from_the_debian_package():
    stream = FashionMNISTStream("class_incremental", max_per_window=300)
    windows = stream.windows()
    assert [sorted(np.unique(w.y).tolist()) for w in windows] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert [len(w) for w in windows] == [300] * 5
    assert windows[0].x.shape == (300, 1, 28, 28) and windows[0].x.dtype == np.float32
    assert windows[0].x.max() <= 1.0 and stream.feature_shape == (1, 28, 28)

"""Replay buffers: bounded, fair to every window (reservoir) or every class (class-balanced), private at
capacity 0, and resumable from a checkpoint as if never interrupted."""

import numpy as np
import pytest
from scipy import stats

from perennial.learn import ClassBalancedBuffer, ReservoirBuffer
from perennial.registry.tensorfile import load_tree, save_tree


def _window(w: int, n: int, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``n`` examples whose single feature is a unique id (window * 10_000 + position)."""
    x = (w * 10_000 + np.arange(n, dtype=np.float32))[:, None]
    y = labels if labels is not None else np.arange(n) % 3
    return x, np.asarray(y, np.int64)


def _imbalanced(n: int, rare_share: float) -> np.ndarray:
    n_rare = round(n * rare_share)
    return np.r_[np.zeros(n - n_rare), np.ones(n_rare)].astype(np.int64)


@pytest.mark.parametrize("buffer_type", [ReservoirBuffer, ClassBalancedBuffer])
def test_never_holds_more_than_capacity(buffer_type):
    buf = buffer_type(capacity=250, seed=0)
    for w, n in enumerate([100, 100, 400, 3, 0, 900]):
        buf.update(*_window(w, n), window=w)
        assert len(buf) == len(buf.x) == len(buf.window) == min(buf.seen, 250)
    assert buf.seen == 1503


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reservoir_is_close_to_uniform_over_windows(seed):
    buf = ReservoirBuffer(capacity=1000, seed=seed)
    for w in range(20):
        buf.update(*_window(w, 500), window=w)
    counts = np.bincount(buf.window, minlength=20)
    assert counts.sum() == 1000
    # Each window's share is about hypergeometric with mean 50 and sd ~6.7: far from the last-in-wins
    # (or first-in-wins) shape a broken reservoir has.
    assert counts.min() >= 25 and counts.max() <= 75, counts
    assert stats.chisquare(counts).pvalue > 0.01, counts


def test_reservoir_keeps_stored_examples_intact():
    """What the buffer stores are real (x, y, window) triples from the stream, each at most once."""
    buf = ReservoirBuffer(capacity=300, seed=3)
    for w in range(5):
        buf.update(*_window(w, 200), window=w)
    ids = buf.x[:, 0].astype(int)
    assert len(np.unique(ids)) == len(ids)
    np.testing.assert_array_equal(ids // 10_000, buf.window)
    np.testing.assert_array_equal((ids % 10_000) % 3, buf.y)


@pytest.mark.parametrize("buffer_type", [ReservoirBuffer, ClassBalancedBuffer])
def test_capacity_zero_stores_nothing(buffer_type):
    buf = buffer_type(capacity=0, seed=0)
    for w in range(3):
        buf.update(*_window(w, 50), window=w)
    assert len(buf) == 0 and buf.x is None
    state = buf.state_dict()
    assert state["x"].numel() == 0 and state["y"].numel() == 0 and state["window"].numel() == 0
    rx, ry = buf.sample(10, seed=0)
    assert len(rx) == len(ry) == 0
    assert buf.seen == 150


def test_negative_capacity_is_refused():
    with pytest.raises(ValueError, match="-1"):
        ReservoirBuffer(capacity=-1)


def test_class_balanced_keeps_every_rare_example():
    buf = ClassBalancedBuffer(capacity=20, seed=0)
    buf.update(*_window(0, 100, _imbalanced(100, 0.05)), window=0)
    assert np.bincount(buf.y).tolist() == [15, 5]


def test_class_balanced_splits_evenly_when_every_class_has_enough():
    buf = ClassBalancedBuffer(capacity=100, seed=0)
    for w in range(10):
        buf.update(*_window(w, 100, _imbalanced(100, 0.05)), window=w)
    assert np.bincount(buf.y).tolist() == [50, 50]
    # A reservoir on the same stream keeps the rare class at about its 5% share.
    res = ReservoirBuffer(capacity=100, seed=0)
    for w in range(10):
        res.update(*_window(w, 100, _imbalanced(100, 0.05)), window=w)
    assert np.bincount(res.y, minlength=2)[1] < 15


def test_class_balanced_makes_room_for_a_class_that_appears_later():
    buf = ClassBalancedBuffer(capacity=90, seed=0)
    buf.update(*_window(0, 300, np.zeros(300)), window=0)
    assert np.bincount(buf.y).tolist() == [90]
    buf.update(*_window(1, 300, np.r_[np.ones(150), np.full(150, 2)]), window=1)
    assert np.bincount(buf.y).tolist() == [30, 30, 30]


def test_class_balanced_keeps_a_class_uniform_over_windows():
    buf = ClassBalancedBuffer(capacity=400, seed=1)
    for w in range(10):
        buf.update(*_window(w, 200, np.arange(200) % 2), window=w)
    for c in (0, 1):
        counts = np.bincount(buf.window[buf.y == c], minlength=10)
        assert counts.sum() == 200
        assert counts.min() >= 8 and counts.max() <= 35, counts


def _feed(buf, windows: range) -> None:
    rng = np.random.default_rng(windows.start)
    for w in windows:
        buf.update(*_window(w, 150, rng.choice(3, size=150, p=[0.8, 0.15, 0.05])), window=w)


@pytest.mark.parametrize("buffer_type", [ReservoirBuffer, ClassBalancedBuffer])
def test_resumed_buffer_equals_uninterrupted_one(buffer_type, tmp_path):
    uninterrupted = buffer_type(capacity=120, seed=7)
    _feed(uninterrupted, range(0, 4))
    _feed(uninterrupted, range(4, 9))

    first = buffer_type(capacity=120, seed=7)
    _feed(first, range(0, 4))
    save_tree(tmp_path / "buffer.safetensors", first.state_dict())  # as the loop checkpoints it
    resumed = buffer_type(capacity=120, seed=7)
    resumed.load_state_dict(load_tree(tmp_path / "buffer.safetensors"))
    _feed(resumed, range(4, 9))

    assert resumed.seen == uninterrupted.seen
    np.testing.assert_array_equal(resumed.x, uninterrupted.x)
    np.testing.assert_array_equal(resumed.y, uninterrupted.y)
    np.testing.assert_array_equal(resumed.window, uninterrupted.window)
    for seed in (0, 1):
        np.testing.assert_array_equal(resumed.sample(50, seed)[0], uninterrupted.sample(50, seed)[0])


def test_restoring_an_empty_buffer_keeps_it_empty():
    buf = ReservoirBuffer(capacity=10, seed=0)
    restored = ReservoirBuffer(capacity=10, seed=0)
    restored.load_state_dict(buf.state_dict())
    assert len(restored) == 0 and restored.x is None
    restored.update(*_window(0, 4), window=0)
    assert len(restored) == 4


def test_sample_draws_without_replacement():
    buf = ReservoirBuffer(capacity=200, seed=0)
    buf.update(*_window(0, 200), window=0)
    x, y = buf.sample(150, seed=0)
    assert len(x) == len(y) == 150
    assert len(np.unique(x[:, 0])) == 150
    x_all, _ = buf.sample(1000, seed=0)  # asking for more than stored returns everything once
    assert sorted(x_all[:, 0].tolist()) == sorted(buf.x[:, 0].tolist())
    assert len(buf.sample(0, seed=0)[1]) == 0


def test_sample_is_deterministic_per_seed():
    buf = ReservoirBuffer(capacity=200, seed=0)
    buf.update(*_window(0, 200), window=0)
    a, b, c = buf.sample(50, seed=1), buf.sample(50, seed=1), buf.sample(50, seed=2)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    # Pairs stay together.
    np.testing.assert_array_equal(a[0][:, 0].astype(int) % 3, a[1])


def test_same_seed_same_contents_different_seed_different():
    bufs = [ReservoirBuffer(capacity=100, seed=s) for s in (5, 5, 6)]
    for buf in bufs:
        _feed(buf, range(0, 5))
    np.testing.assert_array_equal(bufs[0].x, bufs[1].x)
    assert not np.array_equal(np.sort(bufs[0].x[:, 0]), np.sort(bufs[2].x[:, 0]))

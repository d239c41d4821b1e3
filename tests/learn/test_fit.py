"""Training batches: every example once per epoch, a fresh seeded order each epoch."""

import numpy as np
import pytest
import torch

from perennial.learn import MLP, ClassifierModule
from perennial.learn.fit import BatchLoader, fit


def _epoch(loader: BatchLoader) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    batches = list(loader)
    return [b["x"] for b in batches], [b["y"] for b in batches]


def test_every_example_once_per_epoch():
    x = np.arange(103, dtype=np.float32)[:, None]
    y = np.arange(103) % 2
    loader = BatchLoader({"x": x, "y": y}, batch_size=10, seed=0)
    assert len(loader) == 11
    for _ in range(3):
        xs, ys = _epoch(loader)
        assert len(xs) == len(loader)
        assert [len(b) for b in ys] == [10] * 10 + [3]
        ids = torch.cat(xs)[:, 0].long()
        assert sorted(ids.tolist()) == list(range(103))
        torch.testing.assert_close(torch.cat(ys), ids % 2)  # pairs stay together


def test_reshuffles_between_epochs_and_repeats_per_seed():
    x, y = np.arange(64, dtype=np.float32)[:, None], np.zeros(64, np.int64)
    a = [torch.cat(_epoch(BatchLoader({"x": x, "y": y}, 8, seed=0))[0]) for _ in range(2)]
    loader = BatchLoader({"x": x, "y": y}, 8, seed=0)
    first, second = torch.cat(_epoch(loader)[0]), torch.cat(_epoch(loader)[0])
    assert not torch.equal(first, second)
    torch.testing.assert_close(first, a[0])
    torch.testing.assert_close(a[0], a[1])
    assert not torch.equal(first, torch.cat(_epoch(BatchLoader({"x": x, "y": y}, 8, seed=1))[0]))


def test_extra_arrays_stay_aligned_with_their_rows():
    x = np.arange(20, dtype=np.float32)[:, None]
    data = {
        "x": x,
        "y": np.arange(20) % 2,
        "logits": np.repeat(x, 3, axis=1),
        "replayed": np.arange(20) >= 10,
    }
    for batch in BatchLoader(data, 6, seed=0):
        torch.testing.assert_close(batch["logits"][:, 2], batch["x"][:, 0])
        assert torch.equal(batch["replayed"], batch["x"][:, 0] >= 10)


def test_empty_set_is_refused():
    with pytest.raises(ValueError, match="empty"):
        BatchLoader({"x": np.empty((0, 3), np.float32), "y": np.empty(0, np.int64)}, batch_size=4, seed=0)


def test_fit_reports_work_done_and_cpu_optimizer_state():
    module = ClassifierModule(MLP(in_shape=(3,), n_classes=2, hidden=(8,)), 2)
    x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    result = fit(module, {"x": x, "y": (x[:, 0] > 0).astype(np.int64)}, epochs=2, batch_size=16, seed=0)
    assert result.samples_processed == 100
    assert result.seconds > 0
    state = result.optimizer_state["state"]
    assert {"exp_avg", "exp_avg_sq"} <= set(state[0])
    assert int(state[0]["step"]) == 2 * 4  # two epochs of four batches
    assert all(t.device.type == "cpu" for s in state.values() for t in s.values())

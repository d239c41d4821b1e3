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


def test_data_parallel_ranks_see_disjoint_shards_of_each_epoch():
    x, y = np.arange(50, dtype=np.float32)[:, None], np.zeros(50, np.int64)
    ranks = [BatchLoader({"x": x, "y": y}, 8, seed=0, rank=r, world_size=3) for r in range(3)]
    assert [len(r) for r in ranks] == [3, 3, 3]  # 7 batches padded to 9 steps: every rank steps alike
    order = [b["x"][:, 0].long().tolist() for b in BatchLoader({"x": x, "y": y}, 8, seed=0)]
    shards = [[b["x"][:, 0].long().tolist() for b in r] for r in ranks]
    by_step = [shards[g % 3][g // 3] for g in range(9)]  # global batch g is rank g % 3's step g // 3
    assert by_step[:7] == order  # the ranks split one shuffled epoch between them
    assert by_step[7:] == order[:2]  # and the last two steps wrap around to its first batches
    assert ranks[0].samples_per_epoch() == 50 + 16


def test_unknown_trainer_setting_is_named():
    module = ClassifierModule(MLP(in_shape=(3,), n_classes=2, hidden=(8,)), 2)
    data = {"x": np.zeros((4, 3), np.float32), "y": np.zeros(4, np.int64)}
    with pytest.raises(ValueError, match=r"'gpus'.*accepted: \['accelerator'"):
        fit(module, data, epochs=1, batch_size=2, seed=0, trainer={"gpus": 1})


def test_data_parallel_fit_on_two_cpu_processes_returns_trained_weights():
    """trainer=ddp's path: two gloo workers, each a shard; rank 0's weights come back."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    torch.manual_seed(0)
    module = ClassifierModule(MLP(in_shape=(4,), n_classes=2, hidden=(16,)), 2)
    module.lr = 0.01
    before = {k: v.clone() for k, v in module.state_dict().items()}
    ddp = {"accelerator": "cpu", "devices": 2, "strategy": "ddp_spawn"}
    result = fit(module, {"x": x, "y": y}, epochs=20, batch_size=50, seed=0, trainer=ddp)
    assert int(result.optimizer_state["state"][0]["step"]) == 20 * 4  # 8 batches an epoch, 4 a rank
    assert result.samples_processed == 20 * 400
    assert any(not torch.equal(before[k], v) for k, v in module.state_dict().items())
    accuracy = (module.predict_logits(x).argmax(1).numpy() == y).mean()
    assert accuracy > 0.9

"""The two update kinds: a stateless retrain on the right windows, a stateful fine-tune of a copy of the
champion with replay and the champion's optimizer moments, both reproducible from a seed."""

import numpy as np
import pytest
import torch

from perennial.learn import MLP, ClassifierModule, ReservoirBuffer, StatefulUpdate, StatelessUpdate

D, K = 4, 2


def _build() -> ClassifierModule:
    return ClassifierModule(MLP(in_shape=(D,), n_classes=K, hidden=(16,)), K)


def _split(seed: int, n: int = 120) -> tuple[np.ndarray, np.ndarray]:
    """A linearly separable problem: the class is the sign of the first two features' sum."""
    x = np.random.default_rng(seed).normal(size=(n, D)).astype(np.float32)
    return x, (x[:, 0] + x[:, 1] > 0).astype(np.int64)


def _splits(n_windows: int, n: int = 120) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    return {w: _split(w, n + w) for w in range(n_windows)}  # sizes tell the windows apart


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def champion() -> ClassifierModule:
    return StatelessUpdate(epochs=2, batch_size=32).run(_build, None, _splits(2), [0, 1], None, seed=0).module


def _buffer(splits, capacity: int = 1000) -> ReservoirBuffer:
    buf = ReservoirBuffer(capacity=capacity, seed=0)
    for w, (x, y) in splits.items():
        buf.update(x, y, window=w)
    return buf


def test_stateful_trains_a_copy_and_leaves_the_champion_alone(champion):
    before = _weights(champion)
    splits = _splits(3)
    cand = StatefulUpdate(epochs=1, batch_size=32).run(_build, champion, splits, [2], _buffer(splits), seed=1)
    assert cand.module is not champion
    assert _same(_weights(champion), before)
    assert not _same(_weights(cand.module), before)
    assert cand.kind == "stateful" and cand.trained_on_windows == [2]


@pytest.mark.parametrize(("fraction", "expected"), [(0.5, 122), (0.25, 41), (0.0, 0)])
def test_stateful_replays_its_share(champion, fraction, expected):
    splits = _splits(3)  # window 2 has 122 examples
    update = StatefulUpdate(epochs=1, batch_size=64, replay_fraction=fraction)
    cand = update.run(_build, champion, splits, [2], _buffer(splits), seed=0)
    assert cand.n_replayed == expected == round(122 * fraction / (1 - fraction))
    assert cand.n_samples == 122 + expected
    assert cand.samples_processed == cand.n_samples


def test_stateful_replays_what_a_small_buffer_holds(champion):
    splits = _splits(3)
    cand = StatefulUpdate(epochs=1, replay_fraction=0.5).run(
        _build, champion, splits, [2], _buffer(splits, capacity=30), seed=0
    )
    assert cand.n_replayed == 30 and cand.n_samples == 152


@pytest.mark.parametrize("buffer", [None, ReservoirBuffer(capacity=0)])
def test_stateful_without_a_buffer_is_plain_fine_tuning(champion, buffer):
    cand = StatefulUpdate(epochs=1, replay_fraction=0.5).run(
        _build, champion, _splits(3), [2], buffer, seed=0
    )
    assert cand.n_replayed == 0 and cand.n_samples == 122


def test_stateful_continues_the_champions_adam_moments(champion):
    champion_steps = int(champion.optimizer_state["state"][0]["step"])
    assert champion_steps == 2 * 8  # two epochs over 241 examples in batches of 32
    cand = StatefulUpdate(epochs=1, batch_size=32, lr=1e-4).run(
        _build, champion, _splits(3), [2], None, seed=0
    )
    state = cand.optimizer_state["state"]
    assert {"exp_avg", "exp_avg_sq"} <= set(state[0])
    assert int(state[0]["step"]) == champion_steps + 4  # continued, not restarted
    assert cand.module.optimizer_state is cand.optimizer_state  # a later fine-tune continues from here
    assert all(g["lr"] == 1e-4 for g in cand.optimizer_state["param_groups"])  # the update's lr wins


def test_stateful_with_no_champion_starts_from_scratch():
    cand = StatefulUpdate(epochs=1).run(_build, None, _splits(1), [0], None, seed=0)
    assert cand.trained_on_windows == [0] and cand.n_samples == 120


def test_stateful_recent_windows_trains_on_the_newest_pending_windows_only(champion):
    """After a quiet spell a trigger fires on the newest window; fine-tuning on the whole backlog
    would mostly relearn the old concept."""
    splits = _splits(5)
    capped = StatefulUpdate(epochs=1, recent_windows=1).run(_build, champion, splits, [2, 3, 4], None, seed=0)
    whole = StatefulUpdate(epochs=1).run(_build, champion, splits, [2, 3, 4], None, seed=0)
    assert capped.trained_on_windows == [4] and whole.trained_on_windows == [2, 3, 4]
    assert capped.n_samples == len(splits[4][1])


@pytest.mark.parametrize(
    ("history", "windows"), [("all", [0, 1, 2, 3]), (2, [2, 3]), (1, [3]), (10, [0, 1, 2, 3])]
)
def test_stateless_trains_on_its_history(history, windows):
    splits = _splits(4)
    cand = StatelessUpdate(epochs=1, history=history).run(_build, None, splits, [3], None, seed=0)
    assert cand.kind == "stateless"
    assert cand.trained_on_windows == windows
    assert cand.n_samples == sum(len(splits[w][1]) for w in windows)
    assert cand.n_replayed == 0


def test_stateless_ignores_the_champion(champion):
    a = StatelessUpdate(epochs=1).run(_build, champion, _splits(2), [1], None, seed=3)
    b = StatelessUpdate(epochs=1).run(_build, None, _splits(2), [1], None, seed=3)
    assert _same(_weights(a.module), _weights(b.module))


@pytest.mark.parametrize(
    ("make", "value"),
    [
        (lambda: StatelessUpdate(epochs=0), "0"),
        (lambda: StatefulUpdate(epochs=0), "0"),
        (lambda: StatelessUpdate(batch_size=0), "0"),
        (lambda: StatefulUpdate(replay_fraction=1), "1"),
        (lambda: StatefulUpdate(replay_fraction=-0.1), "-0.1"),
        (lambda: StatelessUpdate(history="x"), "'x'"),
        (lambda: StatelessUpdate(history=0), "0"),
        (lambda: StatefulUpdate(recent_windows=0), "0"),
    ],
)
def test_bad_settings_are_refused_naming_the_value(make, value):
    with pytest.raises(ValueError, match=rf"got {value}$"):
        make()


@pytest.mark.parametrize("update", [StatelessUpdate(epochs=2), StatefulUpdate(epochs=2)])
def test_same_seed_same_weights(champion, update):
    splits = _splits(3)
    runs = [update.run(_build, champion, splits, [2], _buffer(splits), seed=s) for s in (4, 4, 5)]
    assert _same(_weights(runs[0].module), _weights(runs[1].module))
    assert not _same(_weights(runs[0].module), _weights(runs[2].module))


def test_trained_model_beats_chance_on_a_separable_problem():
    cand = StatelessUpdate(epochs=15, batch_size=32, lr=1e-2).run(_build, None, _splits(2), [1], None, seed=0)
    x, y = _split(99, 500)
    accuracy = (cand.module.predict_logits(x).argmax(1).numpy() == y).mean()
    assert accuracy > 0.9

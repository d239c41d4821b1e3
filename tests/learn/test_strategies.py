"""Anti-forgetting strategies: each loss term against a hand computation, each strategy against naive
fine-tuning on class-incremental digits, and their state through kill and resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate

from perennial.cli.run import CONF_DIR
from perennial.data import DigitsStream
from perennial.evaluate import PromotionGate
from perennial.learn import DER, EWC, MLP, ClassifierModule, LwF, ReservoirBuffer, StatefulUpdate
from perennial.registry import load_tree
from perennial.report.run import summarize
from tests.conftest import kill_mid_window, make_loop
from tests.test_loop import comparable


def linear(weight: list[list[float]]) -> ClassifierModule:
    module = ClassifierModule(torch.nn.Linear(len(weight[0]), len(weight), bias=False), len(weight))
    with torch.no_grad():
        module.backbone.weight.copy_(torch.tensor(weight))
    return module


# ---- loss terms by hand ---------------------------------------------------------------------------
def test_ewc_penalty_is_lambda_times_fisher_weighted_squared_distance_to_the_parent():
    module = linear([[1.0, 2.0], [3.0, 4.0]])
    ewc = EWC(lam=10.0)
    fisher = torch.tensor([[1.0, 0.0], [2.0, 0.5]])
    ewc.begin(module, {"fisher": {"backbone.weight": fisher}})
    with torch.no_grad():
        module.backbone.weight.add_(torch.tensor([[0.1, 1.0], [-0.2, 0.4]]))
    # 10 * (1*0.01 + 0*1 + 2*0.04 + 0.5*0.16) = 10 * 0.17
    assert float(ewc.penalty(module, {}, None)) == pytest.approx(1.7)


def test_ewc_fisher_is_mean_squared_minibatch_gradient_plus_the_decayed_parent_fisher():
    weight = np.array([[0.5, -0.5], [0.0, 1.0]])
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)
    y = np.array([0, 1, 0])
    # Cross-entropy's gradient for a bias-free linear layer, by hand: (softmax(W x) - onehot(y)) x^T.
    logits = x @ weight.T
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    per_row = [np.outer(p[i] - np.eye(2)[y[i]], x[i]) for i in range(3)]
    parent = {"fisher": {"backbone.weight": torch.ones(2, 2)}}
    # Minibatches of one row (in any order): the mean of the rows' squared gradients. One batch of
    # all three: the square of their mean gradient, which is smaller.
    for batch_size, new in ((1, np.mean([g**2 for g in per_row], 0)), (3, np.mean(per_row, 0) ** 2)):
        ewc = EWC(lam=1.0, decay=0.5, batch_size=batch_size)
        state = ewc.end(linear(weight.tolist()), {"x": x, "y": y}, parent)
        np.testing.assert_allclose(state["fisher"]["backbone.weight"].numpy(), new + 0.5, rtol=1e-5)


def test_lwf_distils_the_parent_over_the_classes_it_had_learned():
    parent = linear([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    lwf = LwF(alpha=2.0, temperature=2.0)
    lwf.begin(parent, {"seen_classes": torch.tensor([True, True, False])})
    x = torch.tensor([[1.0, 2.0], [0.5, -1.0]])
    logits = torch.tensor([[0.3, 0.1, 5.0], [-1.0, 2.0, 0.0]])
    p_parent = torch.softmax((x @ torch.tensor([[1.0, 0.0], [0.0, 1.0]]).T) / 2.0, dim=1)
    log_p_model = torch.log_softmax(logits[:, :2] / 2.0, dim=1)
    expected = 2.0 * (p_parent * (p_parent.log() - log_p_model)).sum(1).mean()
    assert float(lwf.penalty(parent, {"x": x}, logits)) == pytest.approx(float(expected), rel=1e-5)
    state = lwf.end(
        parent, {"x": x.numpy(), "y": np.array([2, 2])}, {"seen_classes": torch.tensor([1, 1, 0]).bool()}
    )
    assert state["seen_classes"].tolist() == [True, True, True]


def test_lwf_has_nothing_to_distil_for_a_first_model():
    lwf = LwF()
    lwf.begin(linear([[1.0], [2.0]]), None)
    assert lwf.penalty(None, {"x": torch.ones(1, 1)}, torch.ones(1, 2)) == 0.0


def test_der_matches_stored_logits_of_replayed_rows_only():
    der = DER(alpha=0.5)
    logits = torch.tensor([[1.0, 2.0], [3.0, 4.0], [0.0, 0.0]])
    batch = {
        "logits": torch.tensor([[9.0, 9.0], [2.0, 6.0], [1.0, 1.0]]),
        "replayed": torch.tensor([False, True, True]),
    }
    # rows 1 and 2: squared errors (1 + 4) and (1 + 1), mean over 4 values = 7/4
    module = ClassifierModule(torch.nn.Linear(2, 2), 2)
    assert float(der.penalty(module, batch, logits)) == pytest.approx(0.5 * 7 / 4)
    assert der.penalty(module, {"x": torch.ones(1)}, logits) == 0.0


def test_a_stateful_update_starts_ewc_from_the_champion_and_hands_on_its_fisher():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    build = lambda: ClassifierModule(MLP((4,), 2, hidden=(8,)), 2)  # noqa: E731
    update = StatefulUpdate(epochs=2, replay_fraction=0.0)
    first = update.run(build, None, {0: (x, y)}, [0], None, seed=0, regularizers=[EWC(lam=10.0)])
    fisher = first.module.strategy_state["ewc"]["fisher"]
    assert set(fisher) == {n for n, _ in first.module.named_parameters()}
    second = update.run(
        build,
        first.module,
        {0: (x, y), 1: (x, 1 - y)},
        [1],
        None,
        seed=1,
        regularizers=[EWC(lam=10.0, decay=0.5)],
    )
    grown = second.module.strategy_state["ewc"]["fisher"]
    assert all(torch.all(grown[n] >= 0.5 * fisher[n] - 1e-7) for n in fisher)


# ---- strategies against naive on digits ---------------------------------------------------------
def run_digits(tmp_path, name, buffer=None, regularizers=(), head="full"):
    update = StatefulUpdate(epochs=8, replay_fraction=0.5 if buffer is not None else 0.0)
    loop = make_loop(
        tmp_path / name,
        stream=DigitsStream(scenario="class_incremental"),
        update=update,
        buffer=buffer,
        gate=PromotionGate(tolerance=1.0, forgetting_tolerance=1.0),
        regularizers=regularizers,
        initial_epochs=10,
        head=head,
    )
    state = loop.run()
    matrix = loop.accuracy_matrix()
    return summarize(state, loop.registry, matrix, loop.stream)["forgetting"], float(matrix.iloc[-1].mean())


def test_every_strategy_forgets_less_than_naive_fine_tuning_on_class_incremental_digits(tmp_path):
    # Each model has an output for all 10 digits from v1 (loop.head=full), as in Avalanche's
    # benchmarks: the regularisers then also hold down the outputs of digits not yet seen.
    naive, naive_acc = run_digits(tmp_path, "naive")
    results = {
        "replay": run_digits(tmp_path, "replay", ReservoirBuffer(300)),
        "ewc": run_digits(tmp_path, "ewc", regularizers=[EWC(lam=1000.0)]),
        "lwf": run_digits(tmp_path, "lwf", regularizers=[LwF(alpha=10.0)]),
        "derpp": run_digits(tmp_path, "derpp", ReservoirBuffer(300), [DER(alpha=0.3)]),
    }
    for name, (forgetting, _) in results.items():
        assert forgetting < naive - 0.05, f"{name} forgot {forgetting:.3f}, naive {naive:.3f}"
    # the buffers also keep the old digits usable: far better accuracy over all windows at the end
    assert results["replay"][1] > naive_acc + 0.2 and results["derpp"][1] > naive_acc + 0.2


def test_with_a_growing_head_the_replaying_strategies_still_beat_naive_fine_tuning(tmp_path):
    # With loop.head=grow a digit gets its output when it first arrives, so nothing held the new
    # outputs down before: EWC and LwF then forget about as much as naive fine-tuning, as in the
    # class-incremental literature, and replaying stored rows is what protects the old digits.
    naive, naive_acc = run_digits(tmp_path, "naive", head="grow")
    for name, buffer, regularizers in (
        ("replay", ReservoirBuffer(300), ()),
        ("derpp", ReservoirBuffer(300), [DER(alpha=0.3)]),
    ):
        forgetting, accuracy = run_digits(tmp_path, name, buffer, regularizers, head="grow")
        assert forgetting < naive - 0.2 and accuracy > naive_acc + 0.3, (name, forgetting, naive)


# ---- state through kill and resume --------------------------------------------------------------
def test_strategy_state_survives_kill_and_resume(tmp_path):
    def loop_at(path):
        return make_loop(path, buffer=ReservoirBuffer(200), regularizers=[EWC(lam=50.0), DER(alpha=0.3)])

    whole = loop_at(tmp_path / "whole")
    whole.run()
    kill_mid_window(loop_at(tmp_path / "crashed"), window=3)
    resumed = loop_at(tmp_path / "crashed")
    resumed.run(resume=True)
    assert comparable(whole.registry)[:2] == comparable(resumed.registry)[:2]
    for version in [v.id for v in whole.registry.versions()]:
        a, b = (
            whole.registry.load_extra(version, "strategy"),
            resumed.registry.load_extra(version, "strategy"),
        )
        for name, tensor in a["ewc"]["fisher"].items():
            torch.testing.assert_close(tensor, b["ewc"]["fisher"][name], rtol=0, atol=0)
    buffer = load_tree(next((tmp_path / "crashed" / "checkpoint").glob("buffer-*.safetensors")))
    assert buffer["logits"].shape == (len(buffer["y"]), 2)  # DER++'s stored logits are checkpointed too


# ---- bad strategy configs -----------------------------------------------------------------------
def compose_strategy(*overrides):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="run", overrides=list(overrides))


def test_an_unknown_strategy_lists_the_accepted_ones():
    with pytest.raises(ConfigCompositionException) as err:
        compose_strategy("strategy=ewk")
    assert "ewk" in str(err.value) and "ewc" in str(err.value) and "derpp" in str(err.value)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["strategy=ewc", "strategy.regularizers.0.lam=-1"], "ewc.lam must be a number >= 0, got -1"),
        (["strategy=ewc", "strategy.regularizers.0.decay=1.5"], "ewc.decay must be in [0, 1], got 1.5"),
        (["strategy=lwf", "strategy.regularizers.0.temperature=0"], "lwf.temperature must be > 0"),
        (["strategy=derpp", "strategy.regularizers.0.alpha=-0.1"], "der.alpha must be a number >= 0"),
        (["strategy=replay", "strategy.buffer.capacity=-5"], "capacity must be a whole number >= 0, got -5"),
    ],
)
def test_bad_strategy_values_name_the_value_and_the_accepted_range(overrides, message):
    strategy = compose_strategy(*overrides).strategy
    with pytest.raises(Exception) as err:
        if strategy.buffer is not None:
            instantiate(strategy.buffer)
        for regularizer in strategy.regularizers or []:
            instantiate(regularizer)
    assert message in str(err.value)


def test_a_buffer_too_large_for_its_memory_limit_names_the_allowed_range():
    buffer = ReservoirBuffer(capacity=10_000_000, max_gib=0.5)
    with pytest.raises(ValueError, match=r"capacity=10,000,000 .* allowed range is 0\.\.") as err:
        buffer.update(np.zeros((10, 1, 28, 28), np.float32), np.zeros(10, np.int64), window=0)
    assert "max_gib=0.5" in str(err.value)
    assert len(buffer) == 0  # nothing stored


def test_der_without_a_buffer_is_refused(tmp_path):
    with pytest.raises(ValueError, match="der replays stored logits and needs a buffer"):
        make_loop(tmp_path, buffer=None, regularizers=[DER()])

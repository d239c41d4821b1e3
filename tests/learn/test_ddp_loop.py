"""The whole loop under `trainer=ddp`: two gloo processes on the CPU train every version and hand back
the weights, optimizer state and strategy state a one-process run makes, each rank on its own half of
one replay sample.

Two windows of 512 training rows and a buffer of 256 make an update train on 768 rows: 12 batches of 64
on one process, or 12 steps of two 32-row halves of the same batches on two ranks, so the ranks'
averaged gradients are the one-process gradients and the runs can be compared version by version.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from perennial.cli.run import CONF_DIR
from perennial.learn import MLP, ClassifierModule, Regularizer, StatefulUpdate
from perennial.learn.fit import fit
from perennial.loop import ContinuousDeployment
from tests.conftest import make_loop, small_stream

BATCH = 64  # rows in each step over all ranks
N_FEATURES = 6
CAPACITY = 256


class RecordBatches(Regularizer):
    """Adds nothing to the loss; appends the rows of every batch to one file per fit and rank, so a test
    can read what each data-parallel worker trained on."""

    name = "record"

    def __init__(self, folder: Path) -> None:
        folder.mkdir()
        self.folder, self.fits = folder, 0

    def begin(self, module: ClassifierModule, state: dict | None) -> None:
        self.fits += 1  # counted in the parent before each fit; the workers' copies carry the count

    def penalty(self, module, batch, logits):
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        with open(self.folder / f"fit{self.fits}-rank{rank}.f32", "ab") as f:
            f.write(batch["x"].detach().cpu().numpy().astype(np.float32).tobytes())
        return 0.0

    def steps(self, fit_number: int, rank: int, rows_per_step: int) -> np.ndarray:
        """The rows rank ``rank`` trained on in the run's ``fit_number``-th fit, as (step, row, feature)."""
        raw = np.fromfile(self.folder / f"fit{fit_number}-rank{rank}.f32", np.float32)
        return raw.reshape(-1, rows_per_step, N_FEATURES)


def run_loop(
    run_dir: Path, strategy: str, trainer: str, record: RecordBatches | None = None
) -> ContinuousDeployment:
    """v1 on the first window and one stateful update on the second, with the strategy and trainer as
    `perennial-run strategy=... trainer=...` composes them (DDP on two CPU processes)."""
    overrides = [f"strategy={strategy}", f"trainer={trainer}"]
    if trainer == "ddp":
        overrides += ["trainer.accelerator=cpu", "trainer.devices=2"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="run", overrides=overrides)
    settings = OmegaConf.to_container(cfg.trainer, resolve=True)
    ranks = settings["devices"] if trainer == "ddp" else 1
    buffer = instantiate(cfg.strategy.buffer, capacity=CAPACITY) if cfg.strategy.buffer else None
    regularizers = [instantiate(r) for r in cfg.strategy.get("regularizers") or []]
    loop = make_loop(
        run_dir,
        stream=small_stream(n_samples=1280, window=640, drift_points=[640]),
        # update.batch_size is per rank: halved on two ranks, every step sees the one-process batch
        update=StatefulUpdate(
            epochs=5, batch_size=BATCH // ranks, replay_fraction=cfg.strategy.replay_fraction
        ),
        buffer=buffer,
        regularizers=[*regularizers, *([record] if record else [])],
        initial_epochs=5,
    )
    loop.trainer = settings
    loop.run()
    return loop


def assert_same_versions(one: ContinuousDeployment, two: ContinuousDeployment, atol: float) -> None:
    """Same versions and decisions, the same work done, and weights, optimizer and strategy state (EWC's
    Fisher, LwF's classes, the buffer with DER++'s logits) equal within ``atol``."""
    versions = one.registry.versions()
    assert [(v.id, v.status) for v in versions] == [(v.id, v.status) for v in two.registry.versions()]
    for v in versions:
        w = two.registry.get(v.id)
        assert w.trained_on_windows == v.trained_on_windows
        for key in ("n_replayed", "samples_processed", "n_holdout"):
            assert w.metrics[key] == v.metrics[key], (v.id, key)
        assert abs(w.metrics["accuracy"] - v.metrics["accuracy"]) <= 0.02, v.id
        close = {"atol": atol, "rtol": 1e-4}
        torch.testing.assert_close(two.registry.load_weights(v.id), one.registry.load_weights(v.id), **close)
        for extra in ("strategy", "optimizer", "buffer"):
            torch.testing.assert_close(
                two.registry.load_extra(v.id, extra), one.registry.load_extra(v.id, extra), **close
            )
    # One Adam step per batch over all ranks, v1's steps continued by v1.1: each rank counts its own
    # steps, not the other's too.
    optimizer = two.registry.load_extra(versions[-1].id, "optimizer")
    steps = {int(s["step"]) for s in optimizer["state"].values()}
    assert steps == {sum(v.metrics["samples_processed"] for v in versions) // BATCH}


def test_replay_with_ewc_on_two_gloo_processes_matches_one_process(tmp_path):
    one_record, two_record = RecordBatches(tmp_path / "batches-one"), RecordBatches(tmp_path / "batches-two")
    one = run_loop(tmp_path / "one", "replay_ewc", "cpu", one_record)
    two = run_loop(tmp_path / "two", "replay_ewc", "ddp", two_record)

    assert [v.id for v in two.registry.versions()] == ["v1", "v1.1"]
    assert set(two.registry.load_extra("v1.1", "strategy")) == {"ewc", "record"}
    assert two.registry.get("v1.1").metrics["n_replayed"] == CAPACITY
    assert_same_versions(one, two, atol=1e-5)

    # The update (fit 2): each rank took its own half of every one-process batch.
    whole = one_record.steps(2, 0, BATCH)
    halves = [two_record.steps(2, rank, BATCH // 2) for rank in (0, 1)]
    assert len(whole) == len(halves[0]) == len(halves[1]) == 5 * 768 // BATCH
    rows = [[{r.tobytes() for r in step} for step in shard] for shard in (whole, *halves)]
    for step, (both, first, second) in enumerate(zip(*rows, strict=True)):
        assert not first & second, step
        assert first | second == both, step
    # So within an epoch the update's replay sample is split between the ranks, no row on both.
    replay = {r.tobytes() for r in one.split(0).train[0]}
    epoch = 768 // BATCH
    replayed = [set().union(*shard[:epoch]) & replay for shard in rows[1:]]
    assert replayed[0] and replayed[1] and not replayed[0] & replayed[1]
    assert len(replayed[0] | replayed[1]) == CAPACITY


def test_one_spawned_worker_hands_back_what_it_trained():
    """`trainer=ddp trainer.devices=1` still trains in a spawned process, whose module is a copy."""
    x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    module = ClassifierModule(MLP(in_shape=(3,), n_classes=2, hidden=(8,)), 2)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    spawn = {"accelerator": "cpu", "devices": 1, "strategy": "ddp_spawn"}
    result = fit(
        module, {"x": x, "y": (x[:, 0] > 0).astype(np.int64)}, epochs=2, batch_size=16, seed=0, trainer=spawn
    )
    assert any(not torch.equal(before[k], v) for k, v in module.state_dict().items())
    assert int(result.optimizer_state["state"][0]["step"]) == 2 * 4


@pytest.mark.slow
@pytest.mark.parametrize(
    ("strategy", "atol"),
    [
        ("replay", 1e-5),
        ("replay_balanced", 1e-5),
        ("ewc", 1e-5),
        ("lwf", 1e-5),
        # DER++'s term is a mean over the replayed rows of each rank's half, and the halves hold
        # different numbers of them, so its gradient is close to the one-process one but not equal.
        ("derpp", 1e-2),
    ],
)
def test_every_strategy_on_two_gloo_processes_matches_one_process(tmp_path, strategy, atol):
    one = run_loop(tmp_path / "one", strategy, "cpu")
    two = run_loop(tmp_path / "two", strategy, "ddp")
    assert_same_versions(one, two, atol)

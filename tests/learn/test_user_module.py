"""A user's own LightningModule trained by perennial's fit: its loss, optimizer and LR schedule are the
ones used, perennial's replay and regularisers are added around them, and what cannot be honoured is
refused before any training."""

from __future__ import annotations

import warnings

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from perennial.evaluate import PromotionGate
from perennial.learn import EWC, ReservoirBuffer, StatefulUpdate, UserModule
from perennial.learn.fit import fit
from tests.conftest import make_loop, small_stream

D, K = 6, 3


class Smoothed(L.LightningModule):
    """Label-smoothed cross-entropy, SGD with momentum and a StepLR: nothing perennial would choose."""

    def __init__(self, n_classes: int = K, returns: str = "lists") -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(D, 16), nn.ReLU(), nn.Linear(16, n_classes))
        self.returns = returns
        self.loss_calls = 0
        self.labels: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.float())

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.loss_calls += 1
        self.labels.append(y.clone())
        loss = F.cross_entropy(self(x), y, label_smoothing=0.2)
        self.log("train_loss", loss)
        return {"loss": loss}

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)
        if self.returns == "lists":
            return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)]
        if self.returns == "step":
            scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
        return opt


def _data(n: int = 100, seed: int = 0) -> dict[str, np.ndarray]:
    x = np.random.default_rng(seed).normal(size=(n, D)).astype(np.float32)
    return {"x": x, "y": (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1)}


def _fit(module: UserModule, epochs: int = 5, **kw):
    return fit(module, _data(**kw), epochs=epochs, batch_size=25, seed=0)


def test_its_loss_optimizer_and_epoch_schedule_are_the_ones_used():
    module = UserModule(Smoothed(), K, (D,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # self.log outside a Trainer neither crashes nor warns
        result = _fit(module, epochs=5)
    assert module.user.loss_calls == 5 * 4  # 100 rows in batches of 25, every step through its loss
    group = result.optimizer_state["param_groups"][0]
    assert group["momentum"] == 0.9 and "momentum_buffer" in result.optimizer_state["state"][0]
    assert group["lr"] == pytest.approx(0.1 * 0.5 ** (5 // 2))  # StepLR stepped once per epoch


def test_a_scheduler_with_interval_step_steps_every_batch():
    result = _fit(UserModule(Smoothed(returns="step"), K, (D,)), epochs=2)
    assert result.optimizer_state["param_groups"][0]["lr"] == pytest.approx(0.1 * 0.5 ** (8 // 3))


def test_a_plain_optimizer_is_accepted_and_its_state_carries_to_the_next_fit():
    module = UserModule(Smoothed(returns="optimizer"), K, (D,))
    module.optimizer_state = _fit(module, epochs=1).optimizer_state
    restored = module.configure_optimizers()
    saved = module.optimizer_state["state"]
    assert torch.equal(
        restored.state[module.user.net[0].weight]["momentum_buffer"], saved[0]["momentum_buffer"]
    )
    # A parameter of another shape than the saved one starts fresh rather than failing.
    module.user.net[0] = nn.Linear(D, 8)
    module.user.net[2] = nn.Linear(8, K)
    assert module.user.net[0].weight not in module.configure_optimizers().state


def test_ewc_is_added_to_its_loss_and_pulls_towards_the_anchor():
    def trained(lam: float) -> tuple[UserModule, dict[str, torch.Tensor]]:
        L.seed_everything(0, verbose=False)
        module = UserModule(Smoothed(returns="optimizer"), K, (D,))
        ewc = EWC(lam=lam)
        ewc.begin(module, {"fisher": {n: torch.ones_like(p) for n, p in module.named_parameters()}})
        module.regularizers = [ewc]
        return module, ewc.anchor

    anchored, anchor = trained(3.0)
    free, _ = trained(0.0)
    batch = {k: torch.as_tensor(v[:25]) for k, v in _data().items()}
    with torch.no_grad():
        for p in [*anchored.parameters(), *free.parameters()]:
            p.add_(0.3)
    assert anchored.training_step(batch, 0) > free.training_step(batch, 0) + 0.1
    for module in (anchored, free):
        with torch.no_grad():
            for n, p in module.named_parameters():
                p.copy_(anchor[n])
        _fit(module, epochs=10)

    def drift(module):
        return sum(float((p.detach() - anchor[n]).pow(2).sum()) for n, p in module.named_parameters())

    assert drift(anchored) < 0.1 * drift(free)


def test_replayed_rows_are_in_its_batches():
    x, _ = _data(200).values()
    old = (x[:100], np.full(100, 2))  # class 2 only in the buffer: it can reach training only by replay
    new = (x[100:], np.zeros(100, np.int64))
    buffer = ReservoirBuffer(capacity=100, seed=0)
    buffer.update(*old, window=0)
    champion = UserModule(Smoothed(), K, (D,))
    update = StatefulUpdate(epochs=1, batch_size=25, replay_fraction=0.5)
    cand = update.run(lambda **_: UserModule(Smoothed(), K, (D,)), champion, {0: old, 1: new}, [1], buffer, 0)
    labels = torch.cat(cand.module.user.labels)
    assert cand.n_replayed > 0 and int((labels == 2).sum()) == cand.n_replayed


class NoStep(L.LightningModule):
    def __init__(self, n_out: int = K) -> None:
        super().__init__()
        self.net = nn.Linear(D, n_out)

    def forward(self, x):
        return self.net(x)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class NoOptimizer(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(D, K)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch[0]), batch[1])


class Manual(NoOptimizer):
    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class TwoOptimizers(Manual):
    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = True

    def configure_optimizers(self):
        return [torch.optim.SGD(self.parameters(), lr=0.1), torch.optim.Adam(self.parameters())]


class Plateau(TwoOptimizers):
    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=0.1)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss"}}


class ReturnsFloat(TwoOptimizers):
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def training_step(self, batch, batch_idx):
        return float(super().training_step(batch, batch_idx).detach())


class WrongWidth(NoStep):
    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch[0]), batch[1])


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (NoStep, TypeError, "NoStep does not define training_step"),
        (NoOptimizer, TypeError, "NoOptimizer does not define configure_optimizers"),
        (Manual, ValueError, "Manual sets automatic_optimization = False"),
        (lambda: WrongWidth(n_out=5), ValueError, r"WrongWidth's forward gave \(2, 5\).*\(2, 3\)"),
        (lambda: nn.Linear(D, K), TypeError, "Linear is not a lightning.LightningModule"),
    ],
)
def test_what_cannot_be_honoured_is_refused_when_built(make, error, message):
    with pytest.raises(error, match=message):
        UserModule(make(), K, (D,))


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (TwoOptimizers, ValueError, "TwoOptimizers.configure_optimizers returned 2 optimizers"),
        (Plateau, ValueError, r"Plateau's lr_scheduler sets \['monitor'\]"),
        (ReturnsFloat, TypeError, "ReturnsFloat.training_step returned float"),
    ],
)
def test_what_cannot_be_honoured_is_refused_before_any_step(make, error, message):
    module = UserModule(make(), K, (D,))
    before = {k: v.clone() for k, v in module.state_dict().items()}
    with pytest.raises(error, match=message):
        _fit(module, epochs=1)
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())


def test_a_loop_trains_and_promotes_versions_of_a_users_module(tmp_path):
    stream = small_stream()
    built: list[UserModule] = []

    def build(**_):
        built.append(UserModule(Smoothed(stream.n_classes), stream.n_classes, tuple(stream.feature_shape)))
        return built[-1]

    loop = make_loop(
        tmp_path,
        stream=stream,
        build=build,
        regularizers=(EWC(lam=1.0),),
        gate=PromotionGate(tolerance=1.0, forgetting_tolerance=1.0, fresh="holdout"),
    )
    state = loop.run()
    assert state["champion"] not in (None, "v1")
    assert "momentum_buffer" in loop.registry.load_extra(state["champion"], "optimizer")["state"][0]
    assert sum(m.user.loss_calls for m in built) > 0


def test_deploy_takes_a_users_lightning_module_as_its_model(tmp_path):
    import perennial as pn

    from ..regression_helpers import DriftingRegression

    stream = pn.SyntheticStream(n_samples=1500, window=300, n_features=D, kind="none")

    def mine(in_shape, n_classes):  # the user's module, as a model factory
        return Smoothed(n_classes)

    parts = {
        "update": pn.StatefulUpdate(epochs=1),
        "settings": pn.LoopSettings(warmup_windows=1, initial_epochs=2),
    }
    loop = pn.deploy(stream, mine, run_dir=tmp_path / "run", **parts)
    result = loop.run()
    assert isinstance(loop.load(result.champion), UserModule)
    assert len(result.rows) == 4
    with pytest.raises(ValueError, match="Smoothed: a user's LightningModule is trained as a classifier"):
        pn.deploy(DriftingRegression(n_windows=3), mine, run_dir=tmp_path / "regression", **parts).run()

"""A user's own ``LightningModule`` trained as a perennial model: its loss, its optimizer and its LR
scheduler, with perennial's replay and regularisers added around them (docs/design.md, "Your own
LightningModule")."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import lightning as L
import torch

from perennial.learn.module import ClassifierModule, _fits

# Keys of a ``configure_optimizers`` scheduler dict that perennial honours as Lightning does.
SCHEDULER_KEYS = ("scheduler", "interval", "frequency", "name")
INTERVALS = ("epoch", "step")


class UserModule(ClassifierModule):
    """A ``ClassifierModule`` around a user's ``LightningModule`` that defines ``training_step`` and
    ``configure_optimizers``: the fit calls them as Lightning would, on ``(x, y)`` batches (replayed rows
    mixed in), and adds the regularisers' penalties to the loss they return.

    What it cannot honour is refused here, before any training: a missing ``training_step`` or
    ``configure_optimizers``, manual optimization, or a forward that does not give ``(n, n_classes)``
    logits on zeros of ``in_shape``.

    >>> class Tiny(L.LightningModule):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.net = torch.nn.Linear(4, 3)
    ...     def forward(self, x):
    ...         return self.net(x)
    >>> UserModule(Tiny(), n_classes=3, in_shape=(4,))
    Traceback (most recent call last):
    TypeError: Tiny does not define training_step; perennial trains a user's LightningModule with its own training_step(batch, batch_idx) and configure_optimizers()
    """  # noqa: E501

    def __init__(self, module: L.LightningModule, n_classes: int, in_shape: Sequence[int]) -> None:
        name = type(module).__name__
        if not isinstance(module, L.LightningModule):
            raise TypeError(f"{name} is not a lightning.LightningModule")
        for hook in ("training_step", "configure_optimizers"):
            if getattr(type(module), hook) is getattr(L.LightningModule, hook):
                raise TypeError(
                    f"{name} does not define {hook}; perennial trains a user's LightningModule with its own "
                    "training_step(batch, batch_idx) and configure_optimizers()"
                )
        if not module.automatic_optimization:
            raise ValueError(
                f"{name} sets automatic_optimization = False; perennial's fit steps the optimizer itself "
                "and cannot run manual optimization"
            )
        super().__init__(module, n_classes)
        self._check_logits(tuple(in_shape))
        self.lr_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        self.scheduler_interval = "epoch"

    @property
    def user(self) -> L.LightningModule:
        return self.backbone

    def _check_logits(self, in_shape: tuple[int, ...]) -> None:
        was_training = self.user.training
        self.user.eval()
        try:
            with torch.no_grad():
                out = self.user(torch.zeros((2, *in_shape)))
        finally:
            self.user.train(was_training)
        shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        if shape != (2, self.n_classes):
            raise ValueError(
                f"{type(self.user).__name__}'s forward gave {shape} on a batch of 2 inputs of shape "
                f"{in_shape}; perennial needs (n, n_classes) = (2, {self.n_classes}) logits"
            )

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        user = self.user
        # Outside a Trainer, Lightning's self.log warns on every call; nothing here collects the values.
        user.log, user.log_dict = _ignore, _ignore
        try:
            out = user.training_step((batch["x"], batch["y"]), batch_idx)
        finally:
            del user.log, user.log_dict
        loss = out.get("loss") if isinstance(out, Mapping) else out
        if not (torch.is_tensor(loss) and loss.dim() == 0):
            raise TypeError(
                f"{type(user).__name__}.training_step returned {type(out).__name__}; perennial needs a "
                "scalar loss tensor or a dict with a 'loss' tensor (returning None to skip a batch is not "
                "supported)"
            )
        if self.regularizers:  # their penalties read this module's logits on the whole batch
            logits = self(batch["x"])
            for regularizer in self.regularizers:
                loss = loss + regularizer.penalty(self, batch, logits)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """The user's one optimizer; its scheduler, if any, is kept for the fit's hooks to step. A parent
        version's optimizer state is restored by parameter position where the shapes fit."""
        optimizer, scheduler = _one_optimizer(type(self.user).__name__, self.user.configure_optimizers())
        self.lr_scheduler = scheduler.get("scheduler") if scheduler else None
        self.scheduler_interval = scheduler.get("interval", "epoch") if scheduler else "epoch"
        if self.optimizer_state is not None:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            state = {
                int(i): moments
                for i, moments in self.optimizer_state["state"].items()
                if int(i) < len(params) and _fits(moments, params[int(i)].shape)
            }
            # The groups' settings are this run's (the user's lr); only per-parameter state carries over.
            optimizer.load_state_dict(
                {"state": state, "param_groups": optimizer.state_dict()["param_groups"]}
            )
        return optimizer

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.lr_scheduler is not None and self.scheduler_interval == "step":
            self.lr_scheduler.step()

    def on_train_epoch_end(self) -> None:
        if self.lr_scheduler is not None and self.scheduler_interval == "epoch":
            self.lr_scheduler.step()


def _ignore(*args, **kwargs) -> None:
    return None


def _one_optimizer(name: str, configured) -> tuple[torch.optim.Optimizer, dict | None]:
    """The optimizer and scheduler dict from any of ``configure_optimizers``'s single-optimizer
    return shapes: an optimizer; ``[optimizer]``; ``([optimizer], [scheduler])``; ``{"optimizer": ...,
    "lr_scheduler": scheduler or {"scheduler": ..., "interval": "epoch" | "step"}}``."""
    optimizers, schedulers = configured, []
    if isinstance(configured, Mapping):
        optimizers = [configured.get("optimizer")]
        schedulers = [configured["lr_scheduler"]] if configured.get("lr_scheduler") is not None else []
    elif (
        isinstance(configured, tuple | list)
        and len(configured) == 2
        and all(isinstance(part, tuple | list) for part in configured)
    ):
        optimizers, schedulers = configured
    elif isinstance(configured, tuple | list) and configured and isinstance(configured[0], Mapping):
        if len(configured) > 1:
            raise ValueError(f"{name}.configure_optimizers returned {len(configured)} optimizers; {_ONE}")
        return _one_optimizer(name, configured[0])
    if isinstance(optimizers, torch.optim.Optimizer):
        optimizers = [optimizers]
    if not isinstance(optimizers, tuple | list) or not all(
        isinstance(o, torch.optim.Optimizer) for o in optimizers
    ):
        raise TypeError(
            f"{name}.configure_optimizers returned {type(configured).__name__}, not an optimizer, "
            f"(optimizers, schedulers) or a dict with 'optimizer'; {_ONE}"
        )
    if len(optimizers) != 1:
        raise ValueError(f"{name}.configure_optimizers returned {len(optimizers)} optimizers; {_ONE}")
    if len(schedulers) > 1:
        raise ValueError(f"{name}.configure_optimizers returned {len(schedulers)} LR schedulers; {_ONE}")
    if not schedulers:
        return optimizers[0], None
    scheduler = dict(schedulers[0]) if isinstance(schedulers[0], Mapping) else {"scheduler": schedulers[0]}
    unknown = sorted(set(scheduler) - set(SCHEDULER_KEYS))
    if unknown:
        raise ValueError(
            f"{name}'s lr_scheduler sets {unknown}, which perennial's fit does not honour "
            f"(no metric is monitored); accepted keys: {list(SCHEDULER_KEYS)}"
        )
    if scheduler.get("interval", "epoch") not in INTERVALS:
        raise ValueError(
            f"{name}'s lr_scheduler interval is {scheduler['interval']!r}; accepted: {list(INTERVALS)}"
        )
    if scheduler.get("frequency", 1) != 1:
        raise ValueError(f"{name}'s lr_scheduler frequency is {scheduler['frequency']!r}; only 1 is honoured")
    if isinstance(scheduler.get("scheduler"), torch.optim.lr_scheduler.ReduceLROnPlateau):
        raise ValueError(
            f"{name} uses ReduceLROnPlateau, which needs a monitored metric perennial's fit lacks"
        )
    return optimizers[0], scheduler


_ONE = "perennial's fit runs one optimizer with at most one LR scheduler"

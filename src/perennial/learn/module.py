"""The LightningModule that wraps any backbone, and plain-torch inference for evaluation."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from perennial.learn.pretrained import param_groups, state_by_name


class ClassifierModule(L.LightningModule):
    """A classifier around a backbone built from config.

    The optimizer settings are attributes, not hyperparameters, because the update that trains the
    module sets them (a stateful fine-tune may use a smaller learning rate than a retrain), and
    ``optimizer_state`` lets a fine-tune continue its parent's Adam moments instead of restarting them.

    ``regularizers`` (anti-forgetting terms such as EWC or LwF) add to the loss while an update
    trains; ``strategy_state`` is what they hand from a version to the versions fine-tuned from it.
    """

    def __init__(
        self,
        backbone: nn.Module,
        n_classes: int,
        known_classes: int | None = None,
        n_features: int | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.n_classes = n_classes  # the stream's classes: the width of every logits array
        # A stream's schema only grows: classes seen later take the next ids, and feature columns
        # that appear mid-stream come after the others. A model knows the first ``known_classes``
        # (its head's width) and reads the first ``n_features`` columns, so it keeps working on
        # later windows while a wider model is trained.
        self.known_classes = n_classes if known_classes is None else int(known_classes)
        self.n_features = None if n_features is None else int(n_features)
        # Which configured architecture built it: None for ``model``, "challenger" for a challenger
        # line's (``challenger.model``); a version must be rebuilt from the same one.
        self.architecture: str | None = None
        if not 1 <= self.known_classes <= n_classes:
            raise ValueError(f"known_classes must be in 1..{n_classes}, got {known_classes!r}")
        self.lr = 1e-3
        self.weight_decay = 0.0
        self.optimizer_state: dict | None = None
        self.strategy_state: dict = {}
        self.regularizers: list = []
        # Per-class loss weights for the update that trains it (update.class_weight), or None.
        self.class_weights: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.n_features is not None:
            x = x[..., : self.n_features]
        logits = self.backbone(x)
        if self.known_classes < self.n_classes:  # classes the head has not met are never predicted
            unknown = logits.new_full((len(logits), self.n_classes - self.known_classes), float("-inf"))
            logits = torch.cat([logits, unknown], 1)
        return logits

    @property
    def schema(self) -> dict[str, int | str]:
        """What the registry needs to rebuild this module: empty when it is the configured ``model``
        over the stream's whole schema (every class, every column)."""
        out: dict[str, int | str] = {}
        if self.architecture is not None:
            out["architecture"] = self.architecture
        if self.known_classes < self.n_classes:
            out["known_classes"] = self.known_classes
        if self.n_features is not None:
            out["n_features"] = self.n_features
        return out

    def head(self) -> tuple[str, nn.Linear]:
        """The backbone's output layer (its last linear layer) and its name."""
        linear = [(name, m) for name, m in self.backbone.named_modules() if isinstance(m, nn.Linear)]
        if not linear:
            raise ValueError(f"{type(self.backbone).__name__} has no linear output layer")
        return linear[-1]

    def grow_classes(self, known: int) -> None:
        """Widen the head to the first ``known`` classes, in place. The rows of the classes it knew
        keep their weights; the new rows start from a fresh layer's initialisation, and Adam's
        moments for them start at zero, as for any new parameter."""
        if known <= self.known_classes:
            return
        if known > self.n_classes:
            raise ValueError(f"cannot grow to {known} classes: the stream has {self.n_classes}")
        name, old = self.head()
        if old.out_features != self.known_classes:
            raise ValueError(
                f"{type(self.backbone).__name__}'s last linear layer has {old.out_features} outputs, "
                f"not the {self.known_classes} known classes; it cannot be grown"
            )
        new = nn.Linear(old.in_features, known, bias=old.bias is not None).to(old.weight)
        with torch.no_grad():
            new.weight[: old.out_features] = old.weight
            if old.bias is not None:
                new.bias[: old.out_features] = old.bias
        new.requires_grad_(old.weight.requires_grad)  # a frozen head stays frozen
        prefix = f"backbone.{name}."
        names = [n for n, _ in self.named_parameters()]
        parent_name, _, attr = name.rpartition(".")
        setattr(self.backbone.get_submodule(parent_name) if parent_name else self.backbone, attr, new)
        if self.optimizer_state is not None:
            self.optimizer_state = _grown_moments(self.optimizer_state, names, prefix, known)
        self.known_classes = known

    task = "classification"

    def loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The task's loss of ``outputs`` (this module's forward) against targets ``y``."""
        weights = None if self.class_weights is None else self.class_weights.to(outputs.device)
        return F.cross_entropy(outputs, y, weight=weights)

    def distance(self, outputs: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Per-element squared distance between two sets of outputs on one scale (DER++'s term)."""
        return (outputs - reference).pow(2)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self(batch["x"])
        loss = self.loss(logits, batch["y"])
        for regularizer in self.regularizers:
            loss = loss + regularizer.penalty(self, batch, logits)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam over the trainable parameters (frozen ones are left out), one group per prefix of the
        backbone's ``lrs`` and one for the rest at ``lr``. A parent's state is restored by parameter
        name, so it lands in the right group even if the groups or the frozen set changed since: a
        parameter the parent did not train (or of another shape) starts fresh, one now frozen is dropped."""
        named = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError(f"every parameter of {type(self.backbone).__name__} is frozen: nothing to train")
        lrs = getattr(self.backbone, "lrs", None) or {}
        groups = param_groups(named, self.backbone, lrs, self.lr)
        every = [n for n, _ in self.named_parameters()]
        names = [g["param_names"] for g in groups]
        if names == [every]:
            # One group over every parameter, in order: names are implied by position, so the saved
            # state stays the plain tensors-and-numbers dict it was before groups existed.
            del groups[0]["param_names"]
        optimizer = torch.optim.Adam(groups, lr=self.lr, weight_decay=self.weight_decay)
        if self.optimizer_state is not None:
            saved = state_by_name(self.optimizer_state, every)
            shapes = {n: p.shape for n, p in named}
            current = optimizer.state_dict()
            state = {}
            for group, group_names in zip(current["param_groups"], names, strict=True):
                for index, name in zip(group["params"], group_names, strict=True):
                    moments = saved.get(name)
                    if moments is not None and _fits(moments, shapes[name]):
                        state[index] = moments
            # The groups' settings are this update's; only the per-parameter moments come from the parent.
            optimizer.load_state_dict({"state": state, "param_groups": current["param_groups"]})
        return optimizer

    @torch.no_grad()
    def predict_logits(self, x: np.ndarray | torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        """Logits for a whole array, in eval mode, on the CPU: inference needs no Trainer."""
        was_training = self.training
        self.eval()
        x = torch.as_tensor(np.require(x, requirements="W") if isinstance(x, np.ndarray) else x)
        weight = next(self.parameters(), None)
        if x.is_floating_point() and weight is not None:  # float64 (pandas, numpy) meets float32 weights
            x = x.to(weight.dtype)
        out = [self(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        self.train(was_training)
        return torch.cat(out) if out else torch.empty(0, self.n_classes)

    def predict_outputs(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """What the model answers for a whole array, as numpy: class probabilities ``(n, classes)``,
        or for a regressor its values ``(n, 1)``."""
        logits = self.predict_logits(x).float()
        return logits.numpy() if self.task == "regression" else logits.softmax(1).numpy()

    @torch.no_grad()
    def embed(self, x: np.ndarray | torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        """The inputs of the backbone's last linear layer (the representation the classifier reads),
        for drift tests in the model's own feature space."""
        last = [m for m in self.backbone.modules() if isinstance(m, nn.Linear)]
        if not last:
            raise ValueError(f"{type(self.backbone).__name__} has no linear output layer to embed before")
        captured: list[torch.Tensor] = []
        handle = last[-1].register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0]))
        try:
            self.predict_logits(x, batch_size)
        finally:
            handle.remove()
        return torch.cat(captured) if captured else torch.empty(0, last[-1].in_features)


class RegressorModule(ClassifierModule):
    """A regressor around a backbone built with one output: it predicts a number, not classes.

    The backbone learns the target standardised (``target_shift`` and ``target_scale``, the mean
    and standard deviation of the first data a fresh module trains on), so a target in dollars or
    degrees trains with the same learning rates as one near unit scale; ``forward`` answers in the
    target's own units. Both are buffers: they travel with the weights, and a fine-tuned version
    keeps its parent's, so its outputs stay comparable across versions (LwF, DER++).

    >>> m = RegressorModule(torch.nn.Linear(2, 1))
    >>> m.fit_target(np.array([10.0, 20.0, 30.0]))
    >>> m.predict_values(np.zeros((2, 2))).shape, round(float(m.target_scale), 3)
    ((2,), 8.165)
    """

    task = "regression"

    def __init__(self, backbone: nn.Module, n_features: int | None = None) -> None:
        super().__init__(backbone, 1, None, n_features)
        self.register_buffer("target_shift", torch.tensor(0.0))
        self.register_buffer("target_scale", torch.tensor(1.0))
        self.register_buffer("target_fitted", torch.tensor(False))

    def fit_target(self, y: np.ndarray) -> None:
        """Take the target's scale from ``y``, once: a fine-tune keeps its parent's."""
        if bool(self.target_fitted) or len(y) == 0:
            return
        y = np.asarray(y, np.float64)
        scale = float(y.std())
        self.target_shift.fill_(float(y.mean()))
        self.target_scale.fill_(scale if scale > 0 and np.isfinite(scale) else 1.0)
        self.target_fitted.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.n_features is not None:
            x = x[..., : self.n_features]
        raw = self.backbone(x)
        if raw.dim() != 2 or raw.shape[1] != 1:
            raise ValueError(
                f"{type(self.backbone).__name__} gives outputs of shape {tuple(raw.shape)}; a regressor's "
                "backbone must give one value per row, shape (n, 1)"
            )
        return raw * self.target_scale + self.target_shift

    def loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean squared error on the standardised scale."""
        return F.mse_loss(outputs[:, 0], y.to(outputs.dtype)) / self.target_scale.pow(2)

    def distance(self, outputs: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        return (outputs - reference).pow(2) / self.target_scale.pow(2)

    def grow_classes(self, known: int) -> None:
        return None  # one output, whatever the data

    def predict_values(self, x: np.ndarray | torch.Tensor, batch_size: int = 4096) -> np.ndarray:
        """Predicted values for a whole array, shape ``(n,)``."""
        return self.predict_logits(x, batch_size)[:, 0].float().numpy()


TASKS = ("classification", "regression")


def build_model(
    backbone_factory,
    in_shape: tuple[int, ...],
    n_classes: int,
    known_classes: int | None = None,
    n_features: int | None = None,
    task: str = "classification",
) -> ClassifierModule:
    """A fresh model for a stream's schema, or for the first ``known_classes`` classes and the first
    ``n_features`` columns of a schema that has grown since; for ``task="regression"`` a
    :class:`RegressorModule` (one output, ``n_classes`` unused). The training run and the server both
    build models here, so a version's weights always fit the module the server makes for it."""
    shape = (n_features,) if n_features is not None else tuple(in_shape)
    if task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
    width = 1 if task == "regression" else known_classes or n_classes
    backbone = backbone_factory(in_shape=shape, n_classes=width)
    if _trains_itself(backbone):
        # A user's LightningModule with its own training_step and configure_optimizers.
        from perennial.learn.user_module import UserModule

        name = type(backbone).__name__
        if task == "regression":
            raise ValueError(
                f"{name}: a user's LightningModule is trained as a classifier; a regression "
                "stream needs a backbone (an nn.Module), which perennial trains with MSE"
            )
        if width != n_classes or n_features is not None:
            raise ValueError(
                f"{name}: a user's LightningModule answers every class and reads every column of the "
                f"stream from v1 on; this one was asked for {width} of {n_classes} classes"
                + (f" and {n_features} columns" if n_features is not None else "")
                + "; run with loop.head=full (LoopSettings(head='full')) on a stream whose columns "
                "do not grow"
            )
        return UserModule(backbone, n_classes, shape)
    if task == "regression":
        return RegressorModule(backbone, n_features)
    return ClassifierModule(backbone, n_classes, known_classes, n_features)


def _trains_itself(module: nn.Module) -> bool:
    """Whether ``module`` is a LightningModule that defines its own training_step."""
    return isinstance(module, L.LightningModule) and (
        type(module).training_step is not L.LightningModule.training_step
    )


def _grown_moments(optimizer_state: dict, names: list[str], prefix: str, rows: int) -> dict:
    """An Adam state dict whose tensors for the parameters under ``prefix`` (the head's weight and
    bias) are padded with zero rows to ``rows`` rows. ``names`` are the module's parameter names, for
    states saved before groups carried them."""
    by_index = {
        int(index): (group["param_names"][i] if "param_names" in group else names[int(index)])
        for group in optimizer_state["param_groups"]
        for i, index in enumerate(group["params"])
    }
    state = {}
    for key, moments in optimizer_state["state"].items():
        if by_index.get(int(key), "").startswith(prefix):
            moments = {
                name: _pad_rows(value, rows) if torch.is_tensor(value) and value.dim() else value
                for name, value in moments.items()
            }
        state[key] = moments
    return {**optimizer_state, "state": state}


def _fits(moments: dict, shape: torch.Size) -> bool:
    return all(v.shape == shape for v in moments.values() if torch.is_tensor(v) and v.dim())


def _pad_rows(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    return torch.cat([tensor, tensor.new_zeros((rows - len(tensor), *tensor.shape[1:]))])

"""The LightningModule that wraps any backbone, and plain-torch inference for evaluation."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class ClassifierModule(L.LightningModule):
    """A classifier around a backbone built from config.

    The optimizer settings are attributes, not hyperparameters, because the update that trains the
    module sets them (a stateful fine-tune may use a smaller learning rate than a retrain), and
    ``optimizer_state`` lets a fine-tune continue its parent's Adam moments instead of restarting them.

    ``regularizers`` (anti-forgetting terms such as EWC or LwF) add to the loss while an update
    trains; ``strategy_state`` is what they hand from a version to the versions fine-tuned from it.
    """

    def __init__(self, backbone: nn.Module, n_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.n_classes = n_classes
        self.lr = 1e-3
        self.weight_decay = 0.0
        self.optimizer_state: dict | None = None
        self.strategy_state: dict = {}
        self.regularizers: list = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self(batch["x"])
        loss = F.cross_entropy(logits, batch["y"])
        for regularizer in self.regularizers:
            loss = loss + regularizer.penalty(self, batch, logits)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        if self.optimizer_state is not None:
            optimizer.load_state_dict(self.optimizer_state)
            for group in optimizer.param_groups:  # the update's settings win over the parent's
                group["lr"], group["weight_decay"] = self.lr, self.weight_decay
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

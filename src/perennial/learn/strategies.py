"""Anti-forgetting terms added to the training loss of stateful updates: EWC, LwF and DER++.

Each is a ``Regularizer``: ``begin`` reads the state the parent version handed down, ``penalty``
adds to the loss of every batch, and ``end`` returns the state this version hands to its children.
States are tensors and JSON values only, so they are saved as safetensors with the version.
Replay itself is not a regularizer: it is the buffer (``learn.replay``), and composes with any of these.
Loss formulas follow avalanche-lib 0.6.0's plugins, so the two can be compared like for like.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Mapping

import numpy as np
import torch
from torch.nn import functional as F

from perennial.learn.fit import BatchLoader
from perennial.learn.module import ClassifierModule


def _non_negative(name: str, value: float) -> float:
    if not (isinstance(value, int | float) and value >= 0):
        raise ValueError(f"strategy {name} must be a number >= 0, got {value!r}")
    return float(value)


class Regularizer(ABC):
    """A loss term with state carried from a version to the versions fine-tuned from it."""

    name: str = "regularizer"
    needs_logits: bool = False  # whether the replay buffer must keep the model's logits

    def begin(self, module: ClassifierModule, state: Mapping | None) -> None:
        """Called before training; ``module`` holds the parent's weights, ``state`` its hand-down."""
        return None

    @abstractmethod
    def penalty(self, module: ClassifierModule, batch: Mapping[str, torch.Tensor], logits: torch.Tensor):
        """The term added to this batch's loss."""

    def end(self, module: ClassifierModule, data: Mapping[str, np.ndarray], state: Mapping | None) -> dict:
        """Called after training on ``data``; returns this version's hand-down state."""
        return {}


class EWC(Regularizer):
    """Online Elastic Weight Consolidation (Kirkpatrick et al. 2017; Schwarz et al. 2018).

    Penalty ``lam * sum_i F_i (theta_i - theta*_i)^2`` with ``theta*`` the parent's weights and ``F``
    the parent's Fisher information. After training, a version's Fisher is ``decay * F_parent +
    F_new``, with ``F_new`` the mean squared minibatch gradient of the loss on its training data.
    Only trainable parameters are anchored and have a Fisher: a frozen one cannot move, and a parent's
    Fisher for a parameter frozen since is dropped.

    >>> m = ClassifierModule(torch.nn.Linear(1, 2, bias=False), 2)
    >>> ewc = EWC(lam=2.0)
    >>> ewc.begin(m, {"fisher": {"backbone.weight": torch.ones(2, 1)}})
    >>> with torch.no_grad():
    ...     _ = m.backbone.weight.add_(0.5)
    >>> float(ewc.penalty(m, {}, None).detach())  # 2 * (0.5^2 + 0.5^2)
    1.0
    """

    name = "ewc"

    def __init__(self, lam: float = 100.0, decay: float = 0.9, batch_size: int = 64) -> None:
        self.lam = _non_negative("ewc.lam", lam)
        self.decay = _non_negative("ewc.decay", decay)
        if self.decay > 1:
            raise ValueError(f"strategy ewc.decay must be in [0, 1], got {decay!r}")
        self.batch_size = batch_size
        self.anchor: dict[str, torch.Tensor] = {}
        self.fisher: dict[str, torch.Tensor] = {}

    def begin(self, module: ClassifierModule, state: Mapping | None) -> None:
        self.anchor = {n: p.detach().clone() for n, p in _trainable(module)}
        self.fisher = _fitted(state["fisher"], module) if state and "fisher" in state else {}

    def penalty(self, module, batch, logits):
        if not self.fisher:
            return 0.0
        total = 0.0
        for n, p in _trainable(module):
            if n in self.fisher:
                f, a = self.fisher[n].to(p.device), self.anchor[n].to(p.device)
                total = total + (f * (p - a).pow(2)).sum()
        return self.lam * total

    def end(self, module, data, state):
        was_training = module.training
        module.eval()
        fisher = {n: torch.zeros_like(p, device="cpu") for n, p in _trainable(module)}
        batches = 0
        for batch in BatchLoader({"x": data["x"], "y": data["y"]}, self.batch_size, seed=0):
            module.zero_grad()
            module.loss(module(batch["x"]), batch["y"]).backward()
            for n, p in _trainable(module):
                if p.grad is not None:
                    fisher[n] += p.grad.detach().cpu().pow(2)
            batches += 1
        module.zero_grad()
        module.train(was_training)
        previous = _fitted(state["fisher"], module) if state and "fisher" in state else {}
        return {
            "fisher": {n: f / max(batches, 1) + self.decay * previous.get(n, 0) for n, f in fisher.items()}
        }


def _trainable(module: ClassifierModule):
    """The parameters training may move: those a backbone froze (``model.freeze``) are left out."""
    return [(n, p) for n, p in module.named_parameters() if p.requires_grad]


def _fitted(fisher: Mapping[str, torch.Tensor], module: ClassifierModule) -> dict[str, torch.Tensor]:
    """The parent's Fisher for the module's trainable parameters, with zero rows where the module's
    head has grown since: nothing anchors the weights of classes the parent never knew."""
    shapes = {n: p.shape for n, p in _trainable(module)}
    out = {}
    for name, f in fisher.items():
        if name not in shapes:  # frozen since the parent was trained
            continue
        if name in shapes and f.shape != shapes[name]:
            f = torch.cat([f, f.new_zeros((shapes[name][0] - len(f), *f.shape[1:]))])
        out[name] = f
    return out


class LwF(Regularizer):
    """Learning without Forgetting (Li and Hoiem 2017): distil the parent's outputs on new inputs.

    Penalty ``alpha * KL(softmax(parent / T) || softmax(model / T))`` over the classes the parent had
    learned, on every training batch; for a regressor, ``alpha`` times the squared difference of the
    two predictions on the standardised target scale (the temperature does not apply). No example
    from earlier windows is needed.

    >>> m = ClassifierModule(torch.nn.Linear(2, 2), 2)
    >>> lwf = LwF(alpha=1.0, temperature=2.0)
    >>> lwf.begin(m, {"seen_classes": torch.tensor([True, True])})
    >>> abs(float(lwf.penalty(m, {"x": torch.ones(4, 2)}, m(torch.ones(4, 2)).detach()))) < 1e-6  # no change
    True
    """

    name = "lwf"

    def __init__(self, alpha: float = 1.0, temperature: float = 2.0) -> None:
        self.alpha = _non_negative("lwf.alpha", alpha)
        if not temperature > 0:
            raise ValueError(f"strategy lwf.temperature must be > 0, got {temperature!r}")
        self.temperature = float(temperature)
        self.parent: ClassifierModule | None = None
        self.seen: torch.Tensor | None = None

    def begin(self, module, state):
        self.parent, self.seen = None, None
        if state and "seen_classes" in state and bool(state["seen_classes"].any()):
            self.seen = state["seen_classes"].bool()
            self.parent = copy.deepcopy(module).eval()
            self.parent.regularizers = []
            for p in self.parent.parameters():
                p.requires_grad_(False)

    def penalty(self, module, batch, logits):
        if self.parent is None:
            return 0.0
        self.parent.to(logits.device)
        seen = self.seen.to(logits.device)
        with torch.no_grad():
            target = self.parent(batch["x"])[:, seen]
        if module.task == "regression":
            return self.alpha * module.distance(logits, target).mean()
        log_p = F.log_softmax(logits[:, seen] / self.temperature, dim=1)
        q = F.softmax(target / self.temperature, dim=1)
        return self.alpha * F.kl_div(log_p, q, reduction="batchmean")

    def end(self, module, data, state):
        seen = torch.zeros(module.n_classes, dtype=torch.bool)
        if state and "seen_classes" in state:
            seen |= state["seen_classes"].bool()
        if module.task == "regression":
            seen[:] = len(data["y"]) > 0  # its one output, once it has learned anything
        else:
            seen[torch.as_tensor(np.unique(data["y"]))] = True
        self.parent = None
        return {"seen_classes": seen}


class DER(Regularizer):
    """Dark Experience Replay++ (Buzzega et al. 2020): replayed examples also match the logits the
    model gave them when they were stored.

    The buffer keeps each example's logits; the penalty is ``alpha`` times the mean squared error
    between the current and stored logits of the replayed examples in the batch. Their labels are
    learned through the ordinary loss, as every replayed example's are (DER++'s beta term at 1).
    Needs a replay buffer (``strategy=derpp`` sets one). The penalty reaches parameters only through
    their gradients, so frozen ones never move.
    """

    name = "der"
    needs_logits = True

    def __init__(self, alpha: float = 0.3) -> None:
        self.alpha = _non_negative("der.alpha", alpha)

    def penalty(self, module, batch, logits):
        if "logits" not in batch:
            return 0.0
        replayed = batch["replayed"]
        if not bool(replayed.any()):
            return 0.0
        current, stored = logits[replayed], batch["logits"][replayed]
        # Only classes both models know: one that did not know a class scored it -inf.
        known = torch.isfinite(stored) & torch.isfinite(current)
        return self.alpha * module.distance(current[known], stored[known]).mean()

"""Fitting a module with ``lightning.Trainer`` over batches that already sit in memory."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch

# Lightning announces devices and tips on every fit; a loop fits dozens of times, so keep it quiet.
for _name in ("lightning.pytorch", "lightning.fabric", "lightning"):
    logging.getLogger(_name).setLevel(logging.WARNING)
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*LightningModule.*no.*val.*")
warnings.filterwarnings("ignore", ".*LeafSpec.*")


class BatchLoader:
    """Aligned in-memory arrays (``x``, ``y`` and any extras) cut into shuffled batches of dicts,
    a new seeded order each epoch.

    A per-sample DataLoader adds per-example Python work to every step; slicing tensors already in
    memory adds none (docs/design.md, "Training speed"), so training batches come from here.
    """

    def __init__(self, data: Mapping[str, np.ndarray], batch_size: int, seed: int) -> None:
        if len(data["y"]) == 0:
            raise ValueError("cannot train on an empty set of examples")
        self.tensors = {k: torch.as_tensor(np.require(v, requirements="W")) for k, v in data.items()}
        self.n = len(data["y"])
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        order = torch.randperm(self.n, generator=self.generator)
        for i in range(0, self.n, self.batch_size):
            idx = order[i : i + self.batch_size]
            yield {k: t[idx] for k, t in self.tensors.items()}


@dataclass(frozen=True)
class FitResult:
    seconds: float
    samples_processed: int
    optimizer_state: dict


def fit(
    module: L.LightningModule,
    data: Mapping[str, np.ndarray],
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    trainer: Mapping | None = None,
) -> FitResult:
    """Train ``module`` in place for ``epochs`` on ``data`` (``x``, ``y`` and any extras the module's
    loss reads, e.g. replayed logits) and return the time, work done and optimizer state."""
    L.seed_everything(seed, workers=False, verbose=False)
    loader = BatchLoader(data, batch_size, seed)
    settings = {"accelerator": "cpu", "devices": 1, **(trainer or {})}
    trainer_ = L.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **settings,
    )
    start = time.perf_counter()
    trainer_.fit(module, train_dataloaders=loader)
    seconds = time.perf_counter() - start
    optimizer_state = _to_cpu(trainer_.optimizers[0].state_dict())
    module.cpu()
    return FitResult(
        seconds=seconds, samples_processed=len(data["y"]) * epochs, optimizer_state=optimizer_state
    )


def _to_cpu(tree):
    """Optimizer state after GPU training, moved to the CPU so it saves and reloads anywhere."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().cpu()
    if isinstance(tree, dict):
        return {k: _to_cpu(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(_to_cpu(v) for v in tree)
    return tree

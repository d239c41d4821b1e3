"""Fitting a module with Lightning Fabric over batches that already sit in memory.

The module stays a ``LightningModule``: its ``training_step`` and ``configure_optimizers`` define
the training, and Fabric handles devices, precision and data-parallel processes. ``lightning.Trainer``
ran the same module about 1.6 ms a step slower (hooks, result collection, the optimizer closure),
1.2-1.9x a plain PyTorch loop on small models, where Fabric stays close to it
(docs/design.md, "Training speed").
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException

# Lightning announces devices and tips on every fit; a loop fits dozens of times, so keep it quiet.
for _name in ("lightning.pytorch", "lightning.fabric", "lightning"):
    logging.getLogger(_name).setLevel(logging.WARNING)
warnings.filterwarnings("ignore", ".*LeafSpec.*")

# Keyword arguments of lightning.Fabric that a `trainer` config may set, plus `deterministic`.
TRAINER_KEYS = ("accelerator", "devices", "num_nodes", "strategy", "precision", "deterministic")


class BatchLoader:
    """Aligned in-memory arrays (``x``, ``y`` and any extras) cut into shuffled batches of dicts,
    a new seeded order each epoch.

    A per-sample DataLoader adds per-example Python work to every step; slicing tensors already in
    memory adds none (docs/design.md, "Training speed"), so training batches come from here.

    With several data-parallel processes, every rank draws the same seeded order and takes every
    ``world_size``-th batch of it, so the ranks see disjoint shards of each epoch. Every rank must take
    the same number of steps (each one waits for the others' gradients), so when the batches do not
    divide evenly the last ranks wrap around to the first batches, as ``DistributedSampler`` pads.
    """

    def __init__(
        self,
        data: Mapping[str, np.ndarray],
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if len(data["y"]) == 0:
            raise ValueError("cannot train on an empty set of examples")
        self.tensors = {k: torch.as_tensor(np.require(v, requirements="W")) for k, v in data.items()}
        self.n = len(data["y"])
        self.batch_size = batch_size
        self.rank, self.world_size = rank, world_size
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def n_batches(self) -> int:
        """Batches in one epoch over all ranks."""
        return -(-self.n // self.batch_size)

    def __len__(self) -> int:
        return -(-self.n_batches // self.world_size)

    def samples_per_epoch(self) -> int:
        """Rows trained on in one epoch over all ranks, wrapped-around batches included."""
        sizes = [min(self.batch_size, self.n - i * self.batch_size) for i in range(self.n_batches)]
        return sum(sizes[k % self.n_batches] for k in range(len(self) * self.world_size))

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        batches = torch.randperm(self.n, generator=self.generator).split(self.batch_size)
        for step in range(len(self)):
            idx = batches[(step * self.world_size + self.rank) % len(batches)]
            yield {k: t[idx] for k, t in self.tensors.items()}


@dataclass(frozen=True)
class FitResult:
    seconds: float
    samples_processed: int
    optimizer_state: dict


@dataclass  # not frozen: Fabric maps the worker's return value to the CPU field by field
class _Trained:
    """What a training process hands back: spawned workers train copies, so weights come back too."""

    seconds: float
    samples_processed: int
    optimizer_state: dict
    weights: dict | None


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
    loss reads, e.g. replayed logits) and return the time, work done and optimizer state.

    ``trainer`` holds keyword arguments of ``lightning.Fabric`` (accelerator, devices, num_nodes,
    strategy, precision) and ``deterministic``, which asks torch for deterministic algorithms.
    """
    fabric, deterministic = make_fabric(trainer)
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(deterministic or was_deterministic)
    try:
        trained = fabric.launch(_train, module, data, epochs, batch_size, seed, os.getpid())
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
    optimizer_state = trained.optimizer_state
    if trained.weights is not None:  # trained in other processes: take rank 0's weights
        module.load_state_dict(_map_tree(trained.weights, torch.from_numpy))
        optimizer_state = _map_tree(optimizer_state, torch.from_numpy)
    module.cpu()
    return FitResult(trained.seconds, trained.samples_processed, optimizer_state)


def make_fabric(trainer: Mapping | None) -> tuple[L.Fabric, bool]:
    """A Fabric for the ``trainer`` settings and whether they ask for deterministic algorithms, or a
    ``ValueError`` naming the setting it cannot use (an unknown key, an accelerator this machine lacks).

    >>> make_fabric({"accelerator": "cpu", "deterministic": True})[1]
    True
    >>> make_fabric({"acelerator": "cpu"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: unknown trainer setting(s) ['acelerator']; accepted: ['accelerator', 'devices', ...]
    """
    settings = dict(trainer or {})
    unknown = sorted(set(settings) - set(TRAINER_KEYS))
    if unknown:
        raise ValueError(f"unknown trainer setting(s) {unknown}; accepted: {list(TRAINER_KEYS)}")
    deterministic = bool(settings.pop("deterministic", False))
    settings = {"accelerator": "cpu", "devices": 1, **settings}
    try:
        return L.Fabric(**settings), deterministic
    except (ValueError, RuntimeError, MisconfigurationException) as e:
        raise ValueError(f"trainer settings {settings} cannot run here: {e}") from e


def _train(
    fabric: L.Fabric,
    module: L.LightningModule,
    data: Mapping[str, np.ndarray],
    epochs: int,
    batch_size: int,
    seed: int,
    caller_pid: int,
) -> _Trained:
    # Launchers that start processes (ddp_spawn, ddp_fork) train copies, even with one device; the
    # caller's module learns only what comes back.
    launched = os.getpid() != caller_pid
    L.seed_everything(seed, workers=False, verbose=False)
    loader = BatchLoader(data, batch_size, seed, rank=fabric.global_rank, world_size=fabric.world_size)
    start = time.perf_counter()
    # On the device before the optimizer is built, so a parent's Adam state loads onto it too.
    module.to(fabric.device)
    optimizer = module.configure_optimizers()
    if launched:
        _own_optimizer_state(optimizer)
    model, optimizer = fabric.setup(module, optimizer)
    model.train()
    step = 0
    for _ in range(epochs):
        for batch in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = model.training_step(fabric.to_device(batch), step)
            fabric.backward(loss)
            optimizer.step()
            # Lightning's hooks, no-ops for perennial's own module; a user's module steps its LR scheduler.
            module.on_train_batch_end(loss, batch, step)
            step += 1
        module.on_train_epoch_end()
    seconds = time.perf_counter() - start
    # Setup ties the module to this Fabric and its optimizer; untie it so the trained module copies,
    # pickles and trains again later like any other.
    module._fabric, module._fabric_optimizers = None, []
    optimizer_state = _map_tree(optimizer.state_dict(), lambda t: t.detach().cpu())
    if not launched:
        return _Trained(seconds, loader.samples_per_epoch() * epochs, optimizer_state, weights=None)
    # A worker's tensors would reach the parent as shared-memory handles that close when the worker
    # exits, so they travel as numpy arrays, copied by value.
    weights = _map_tree(module.state_dict(), lambda t: t.detach().cpu().numpy())
    # Tear the process group down here, every rank together: left to the worker's exit, gloo's threads
    # race the interpreter's teardown and a worker now and then aborts ("terminate called without an
    # active exception"), failing a fit that had finished.
    fabric.barrier()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return _Trained(
        seconds, loader.samples_per_epoch() * epochs, _map_tree(optimizer_state, torch.Tensor.numpy), weights
    )


def _own_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Give this process its own copy of the state the optimizer loaded (a parent version's Adam moments
    and step counts).

    Spawn hands every tensor to the workers as one shared-memory copy; Lightning unshares the module's
    parameters and buffers but not this, and Adam updates it in place. Shared, each rank would add its
    steps to the same counters and its gradients to the same moments.
    """
    for state in optimizer.state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                state[key] = value.clone()


def _map_tree(tree, fn):
    """``fn`` applied to every tensor or array in nested dicts, lists and tuples."""
    if isinstance(tree, torch.Tensor | np.ndarray):
        return fn(tree)
    if isinstance(tree, dict):
        return {k: _map_tree(v, fn) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(_map_tree(v, fn) for v in tree)
    return tree

"""Registries and request traffic for the closed-loop tests (tests/test_closed_loop.py and
tests/test_two_processes_e2e.py): a registry of three servable versions, a damaged version's files,
and the registry's view of a live rollout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from perennial.cli.common import stream_and_builder
from perennial.registry import Registry, VersionRecord
from perennial.serve.rollouts import engine
from tests.serve.stored import pipeline_extra

DATA = {
    "_target_": "perennial.data.SyntheticStream",
    "kind": "none",
    "n_samples": 400,
    "window": 100,
    "n_features": 6,
    "seed": 0,
}
CONFIG = {"data": DATA, "model": {"_target_": "perennial.learn.MLP", "_partial_": True, "hidden": [8]}}
# A canary that walks two steps (0.5, then 0.95 after the holdout) of ``min_samples`` canary units
# each, and whose guard cannot trip before 100 units an arm: with every answer right, it completes.
CANARY = {"steps": [0.5, 1.0], "min_samples": 40}


def make_registry(root: Path) -> Path:
    """A registry at ``root`` holding v1 (champion), v2 and v3: untrained but sound models of one
    architecture, each stored with its input pipeline as the loop stores versions."""
    stream, build = stream_and_builder(OmegaConf.create(CONFIG))
    with Registry(root) as reg:
        for seed in range(3):
            torch.manual_seed(seed)
            reg.add(
                VersionRecord(reg.next_id("stateless", None), None, "stateless", config=CONFIG),
                build().state_dict(),
                pipeline_extra(stream),
            )
        reg.promote("v1", reason="test")
    return root


def rows(n: int, seed: int = 0) -> list[list[float]]:
    """``n`` feature rows of the registry's six features."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=generator).tolist()


def damage(root: Path, version: str) -> None:
    """Cut the end off ``version``'s weights: its checksum fails, so it cannot serve."""
    weights = root / "versions" / version / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])


def rollout_state(root: Path) -> dict[str, Any]:
    """The newest rollout as the registry holds it: its status, the last feedback it recorded
    (``seq``) and its engine's summary (``units`` for a canary: labelled rows recorded)."""
    with Registry(root, create=False, readonly=True) as reg:
        record = reg.rollouts.all()[-1]
        return {
            "id": record.id,
            "status": record.status,
            "seq": record.seq,
            "reason": record.reason,
            "summary": engine(record).summary(),
        }

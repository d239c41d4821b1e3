"""Whether two runs hold the same: every version (record, weights and extras, bit for bit), decision,
champion change, window row and the checkpoint, and the output files, less wall-clock times. What
shows that nightly runs equal one run, and that a resumed run equals an uninterrupted one."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from perennial.loop.state import CHECKPOINT_KEY
from perennial.registry import Registry


def run_view(run_dir: str | Path) -> dict:
    """What the run at ``run_dir`` holds, less wall-clock times (created_at, train_seconds, decision
    times), as nested dicts and lists with tensors."""
    run_dir = Path(run_dir)
    with Registry(run_dir / "registry", create=False, readonly=True) as registry:
        versions = {}
        for record in registry.versions():
            fields = asdict(record)
            for clock in ("created_at", "train_seconds"):
                fields.pop(clock)
            # Loaded, not hashed: a tree file's header metadata comes out in no fixed order, so the same
            # tree saved by two processes can differ in bytes.
            names = [n.removesuffix(".safetensors") for n in registry.checksums(record.id)]
            fields["files"] = {n: registry.load_extra(record.id, n) for n in names if n != "weights"}
            fields["files"]["weights"] = registry.load_weights(record.id)
            versions[record.id] = fields
        state = registry.get_state(CHECKPOINT_KEY) or {}
        state.get("compute", {}).pop("train_seconds", None)
        view = {
            "versions": versions,
            "decisions": [{k: v for k, v in d.items() if k != "at"} for d in registry.decisions()],
            "champion_history": [
                {k: v for k, v in h.items() if k != "at"} for h in registry.champion_history()
            ],
            "window_rows": registry.window_rows(),
            "checkpoint": state,
        }
    summary_path = run_dir / "summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        summary.get("compute", {}).pop("train_seconds", None)
        view["summary.json"] = summary
    for name in ("windows.csv", "accuracy_matrix.csv"):
        if (run_dir / name).exists():
            view[name] = (run_dir / name).read_text()
    return view


def differences(a: object, b: object, where: str = "run", names: tuple[str, str] = ("a", "b")) -> list[str]:
    """Where ``a`` and ``b`` differ, as paths; tensors bit for bit (dtype, shape and every value);
    dict key order is not compared (safetensors files load their tensors in no fixed order)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and torch.equal(a, b)
        )
        return [] if same else [f"{where}: tensors differ"]
    if isinstance(a, dict) and isinstance(b, dict):
        found = [f"{where}.{k}: only in {names[0]}" for k in a.keys() - b.keys()]
        found += [f"{where}.{k}: only in {names[1]}" for k in b.keys() - a.keys()]
        for key in a.keys() & b.keys():
            found += differences(a[key], b[key], f"{where}.{key}", names)
        return found
    if isinstance(a, list | tuple) and isinstance(b, list | tuple) and len(a) == len(b):
        pairs = enumerate(zip(a, b, strict=True))
        return [d for i, (x, y) in pairs for d in differences(x, y, f"{where}[{i}]", names)]
    return [] if a == b else [f"{where}: {_short(a)} ({names[0]}) != {_short(b)} ({names[1]})"]


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."

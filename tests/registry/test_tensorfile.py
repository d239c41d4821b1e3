"""Pickle-free checkpoints: nested state goes in, the same state comes out."""

import pickle

import numpy as np
import pytest
import torch

from perennial.registry.tensorfile import atomic_write_text, load_tree, save_tree


@pytest.fixture
def no_pickle(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("loading a checkpoint must not unpickle")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)


def _adam_after_steps(seed: int = 0) -> tuple[torch.nn.Module, torch.optim.Adam]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.8, 0.95))
    for _ in range(3):
        _train_step(model, opt)
    return model, opt


def _train_step(model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    x = torch.arange(20.0).reshape(5, 4) / 10
    loss = model(x).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_resumed_adam_continues_exactly_like_the_uninterrupted_one(tmp_path, no_pickle):
    model, opt = _adam_after_steps()
    save_tree(tmp_path / "opt.safetensors", opt.state_dict())
    loaded = load_tree(tmp_path / "opt.safetensors")
    assert set(loaded["state"]) == set(opt.state_dict()["state"])  # int parameter ids, not "0", "1"

    resumed_model, _ = _adam_after_steps(seed=1)  # different init, then overwritten
    resumed_model.load_state_dict(model.state_dict())
    resumed_opt = torch.optim.Adam(resumed_model.parameters())
    resumed_opt.load_state_dict(loaded)
    assert resumed_opt.param_groups[0]["betas"] == (0.8, 0.95)

    for _ in range(2):
        _train_step(model, opt)
        _train_step(resumed_model, resumed_opt)
    for a, b in zip(model.parameters(), resumed_model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_buffer_like_state_round_trips_with_types_and_shapes(tmp_path, no_pickle):
    storage = torch.arange(12, dtype=torch.float64)
    tree = {
        "x": storage.reshape(3, 4).t(),  # non-contiguous
        "head": storage[:4],  # shares storage with "x"
        "empty": torch.empty(0, 5, dtype=torch.int16),
        "scalar": torch.tensor(7, dtype=torch.int64),
        "flag": torch.tensor(True),
        "labels": np.array([3, 1, 2], dtype=np.int64),
        "counts": {0: 5, 1: 2, "0": "a str key"},
        "spans": [(0, 3), (3, 7)],
        "meta": {"seen": 12, "rate": 0.5, "name": None, "full": False},
    }
    save_tree(tmp_path / "buffer.safetensors", tree)
    out = load_tree(tmp_path / "buffer.safetensors")

    assert out.keys() == tree.keys()
    for key in ("x", "head", "empty", "scalar", "flag"):
        assert out[key].dtype == tree[key].dtype and out[key].shape == tree[key].shape, key
        assert torch.equal(out[key], tree[key]), key
    assert isinstance(out["labels"], np.ndarray) and np.array_equal(out["labels"], tree["labels"])
    assert out["counts"] == {0: 5, 1: 2, "0": "a str key"}
    assert out["spans"] == [(0, 3), (3, 7)] and isinstance(out["spans"][0], tuple)
    assert out["meta"] == tree["meta"]


def test_an_unsupported_leaf_is_refused_with_its_place(tmp_path):
    with pytest.raises(TypeError, match=r"set at tree\['a'\]\[0\]"):
        save_tree(tmp_path / "bad.safetensors", {"a": [{1, 2}]})
    assert not list(tmp_path.iterdir())  # no half-written file left behind


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "resume.json"
    atomic_write_text(path, "old")
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["resume.json"]


def test_atomic_writes_leave_ordinary_permissions(tmp_path):
    import os
    import stat

    from perennial.registry.tensorfile import atomic_write_text

    atomic_write_text(tmp_path / "summary.json", "{}")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "summary.json").stat().st_mode) == 0o666 & ~mask

"""Pretrained backbones: weights from a safetensors file, frozen parameters, per-group learning rates,
and what stateful updates, EWC and DER++ make of them."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from perennial import LoopSettings, StatefulUpdate, deploy
from perennial.data.window import Stream, Window
from perennial.learn import DER, EWC, MLP, ClassifierModule, ResNet18, SmallCNN
from perennial.learn.fit import fit
from perennial.learn.module import build_model
from perennial.serve.models import ModelStore

SHAPE = (3, 16, 16)
FROZEN = ["conv1", "bn1", "layer1"]


def resnet(**kwargs) -> partial:
    return partial(ResNet18, min_size=32, **kwargs)  # 16x16 images, resized to 32: small and quick


def colour_images(n: int, seed: int, shift: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noisy 3x16x16 images whose class is the brightest channel; ``shift`` rotates which channel
    means which class (the drift)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(0.3, 0.2, (n, *SHAPE)).astype(np.float32)
    x[np.arange(n), (y + shift) % 3] += 0.5
    return x, y.astype(np.int64)


@dataclass
class ColourStream(Stream):
    """Six windows of colour images; from window 3 on, the colours mean other classes."""

    n_windows: int = 6
    per_window: int = 96

    def __post_init__(self) -> None:
        self.name, self.feature_shape, self.classes = "colours", SHAPE, [0, 1, 2]

    def windows(self) -> list[Window]:
        out = []
        for i in range(self.n_windows):
            x, y = colour_images(self.per_window, seed=i, shift=int(i >= 3))
            out.append(Window(i, i, i + 1, x, y, np.arange(len(y)) + i * self.per_window))
        return out


def data(n: int = 48, seed: int = 0) -> dict[str, np.ndarray]:
    x, y = colour_images(n, seed)
    return {"x": x, "y": y}


def named_state(module: ClassifierModule, optimizer_state: dict) -> dict[str, dict]:
    from perennial.learn.pretrained import state_by_name

    return state_by_name(optimizer_state, [n for n, _ in module.named_parameters()])


@pytest.fixture
def weights_file(tmp_path):
    """A ResNet-18 for 5 classes whose tensors, BatchNorm statistics included, are not a fresh one's."""
    torch.manual_seed(1)
    source = ResNet18(SHAPE, 5, min_size=32)
    with torch.no_grad():
        for name, t in source.state_dict().items():
            if t.is_floating_point():
                t.add_(torch.randn_like(t) * 0.01 + (0.5 if name.endswith("running_var") else 0))
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, path)
    return source, path


# ---- loading ------------------------------------------------------------------------------------


def test_weights_load_into_every_tensor_but_the_head(weights_file):
    source, path = weights_file
    x = torch.from_numpy(data(8)["x"])
    loaded = build_model(resnet(weights=str(path)), SHAPE, 3)
    fresh = build_model(resnet(), SHAPE, 3)
    original = ClassifierModule(source, 5)
    assert torch.allclose(loaded.embed(x), original.embed(x), atol=1e-5)  # the same features
    assert not torch.allclose(fresh.embed(x), original.embed(x), atol=1e-3)
    assert loaded.backbone.fc.out_features == 3  # the head is new: its tensors were skipped
    assert not torch.equal(loaded.backbone.fc.weight, source.fc.weight[:3])


def test_a_perennial_weights_file_loads_too_and_small_backbones_take_weights(tmp_path):
    mlp = build_model(partial(MLP, hidden=(16,)), (8,), 4)
    save_file(dict(mlp.state_dict()), tmp_path / "mlp.safetensors")  # keys "backbone.net.1.weight", ...
    loaded = MLP((8,), 2, hidden=(16,), weights=str(tmp_path / "mlp.safetensors"))
    assert torch.equal(loaded.net[1].weight, mlp.backbone.net[1].weight)
    cnn = SmallCNN((1, 8, 8), 10)
    save_file(cnn.state_dict(), tmp_path / "cnn.safetensors")
    again = SmallCNN((1, 8, 8), 4, weights=str(tmp_path / "cnn.safetensors"))
    assert torch.equal(again.head[0].weight, cnn.head[0].weight)  # only the output layer is new


def test_a_mismatched_tensor_is_named_with_both_shapes(tmp_path):
    save_file(MLP((8,), 2, hidden=(16, 16)).state_dict(), tmp_path / "w.safetensors")
    with pytest.raises(
        ValueError, match=r"tensor 'net\.1\.weight' has shape \(16, 8\) in the file but \(32, 8\)"
    ):
        MLP((8,), 2, hidden=(32, 16), weights=str(tmp_path / "w.safetensors"))


def test_missing_unexpected_and_non_finite_tensors_are_refused(tmp_path, weights_file):
    _, path = weights_file
    with pytest.raises(ValueError, match=r"tensor\(s\) it does not have: \['bn1\.bias', .* and \d+ more"):
        MLP((3, 16, 16), 2, weights=str(path))
    save_file({"net.1.weight": torch.zeros(64, 8)}, tmp_path / "part.safetensors")
    with pytest.raises(ValueError, match=r"3 tensor\(s\) missing from the file: \['net\.1\.bias', 'net\.3"):
        MLP((8,), 2, weights=str(tmp_path / "part.safetensors"))
    state = MLP((8,), 2).state_dict()
    state["net.3.weight"][0, 0] = float("nan")
    save_file(state, tmp_path / "nan.safetensors")
    with pytest.raises(ValueError, match=r"net\.3\.weight holds 1 NaN"):
        MLP((8,), 2, weights=str(tmp_path / "nan.safetensors"))
    with pytest.raises(ValueError, match=r"model\.weights '.*nowhere' is not a file"):
        MLP((8,), 2, weights=str(tmp_path / "nowhere"))


# ---- freezing and groups ------------------------------------------------------------------------


def test_unknown_freeze_and_lrs_entries_are_named_with_the_prefixes_there_are():
    with pytest.raises(ValueError, match=r"freeze entry 'layer9' .*\['bn1', 'conv1', 'fc', 'layer1'"):
        ResNet18(SHAPE, 3, freeze=["conv1", "layer9"])
    with pytest.raises(ValueError, match=r"lrs entry 'layr4' matches no parameter"):
        ResNet18(SHAPE, 3, lrs={"layr4": 1e-4})
    with pytest.raises(ValueError, match=r"lrs entry 'layer1' names only frozen parameters"):
        ResNet18(SHAPE, 3, freeze=FROZEN, lrs={"layer1": 1e-4})
    with pytest.raises(ValueError, match=r"model.lrs\['fc'\] must be a finite number > 0, got -1"):
        ResNet18(SHAPE, 3, lrs={"fc": -1})
    with pytest.raises(ValueError, match=r"in_shape \(2, 16, 16\)"):
        ResNet18((2, 16, 16), 3)


def test_frozen_parameters_stay_put_and_groups_get_their_learning_rates():
    module = build_model(resnet(freeze=FROZEN, lrs={"head": 1e-2, "layer4": 1e-4}), SHAPE, 3)
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    stats = module.backbone.bn1.running_mean.clone()
    result = fit(module, data(), epochs=1, batch_size=16, seed=0)
    frozen = {n for n in before if n.split(".")[1] in FROZEN}
    assert frozen and all(torch.equal(before[n], p) for n, p in module.named_parameters() if n in frozen)
    assert not torch.equal(before["backbone.layer4.0.conv1.weight"], module.backbone.layer4[0].conv1.weight)
    assert torch.equal(stats, module.backbone.bn1.running_mean)  # a frozen BatchNorm's statistics too
    groups = {tuple(g["param_names"]): g["lr"] for g in result.optimizer_state["param_groups"]}
    names = [n for g in groups for n in g]
    assert not frozen & set(names) and len(names) == len(before) - len(frozen)
    by_lr = {lr: [n for g, r in groups.items() if r == lr for n in g] for lr in groups.values()}
    assert by_lr[1e-2] == ["backbone.fc.weight", "backbone.fc.bias"]
    assert all(n.startswith("backbone.layer4.") for n in by_lr[1e-4])
    assert all(n.split(".")[1] in ("layer2", "layer3") for n in by_lr[1e-3])  # the update's lr


def test_a_stateful_update_continues_each_groups_optimizer_state():
    module = build_model(resnet(freeze=FROZEN, lrs={"head": 1e-2}), SHAPE, 3, known_classes=2)
    old = {k: v[data()["y"] < 2] for k, v in data().items()}  # the first version meets two classes
    first = fit(module, old, epochs=1, batch_size=16, seed=0)
    assert {float(s["step"]) for s in first.optimizer_state["state"].values()} == {3.0}
    module.optimizer_state = first.optimizer_state
    module.grow_classes(3)  # the head's moments grow with it, found by name in their group
    second = fit(module, data(seed=1), epochs=1, batch_size=16, seed=1)
    steps = {n: float(s["step"]) for n, s in named_state(module, second.optimizer_state).items()}
    assert steps["backbone.fc.weight"] == steps["backbone.layer2.0.conv1.weight"] == 6.0
    assert named_state(module, second.optimizer_state)["backbone.fc.weight"]["exp_avg"].shape == (3, 512)

    # The next version freezes layer2 as well and moves layer4 to a group of its own: no crash; layer2's
    # state is dropped, layer4's continues in its new group, and nothing of the frozen layers moves.
    later = build_model(resnet(freeze=[*FROZEN, "layer2"], lrs={"layer4": 1e-4}), SHAPE, 3)
    later.load_state_dict(module.state_dict())
    later.optimizer_state = second.optimizer_state
    third = fit(later, data(seed=2), epochs=1, batch_size=16, seed=2)
    steps = {n: float(s["step"]) for n, s in named_state(later, third.optimizer_state).items()}
    assert "backbone.layer2.0.conv1.weight" not in steps
    assert steps["backbone.layer4.0.conv1.weight"] == steps["backbone.fc.bias"] == 9.0
    assert torch.equal(later.backbone.layer2[0].conv1.weight, module.backbone.layer2[0].conv1.weight)


# ---- EWC and DER++ ------------------------------------------------------------------------------


def small_frozen() -> ClassifierModule:
    torch.manual_seed(0)
    return build_model(partial(MLP, hidden=(16,), freeze=["net.1"]), SHAPE, 3)


def test_ewc_anchors_and_weighs_only_trainable_parameters():
    module, train = small_frozen(), data()
    frozen = module.backbone.net[1].weight.detach().clone()
    ewc = EWC(lam=10.0)
    ewc.begin(module, None)
    state = ewc.end(module, train, None)
    assert set(state["fisher"]) == {"backbone.net.3.weight", "backbone.net.3.bias"}
    assert set(ewc.anchor) == set(state["fisher"])
    ewc.begin(module, {"fisher": {**state["fisher"], "backbone.net.1.weight": torch.ones(16, 768)}})
    assert "backbone.net.1.weight" not in ewc.fisher  # a parent's Fisher of a frozen parameter is dropped
    module.regularizers = [ewc]
    fit(module, data(seed=1), epochs=2, batch_size=16, seed=0)
    assert torch.equal(module.backbone.net[1].weight, frozen)


def test_der_moves_only_trainable_parameters():
    module, train = small_frozen(), data()
    frozen = module.backbone.net[1].weight.detach().clone()
    head = module.backbone.net[3].weight.detach().clone()
    logits = module.predict_logits(train["x"]).numpy() + 1.0
    train |= {"logits": logits, "replayed": np.arange(len(logits)) % 2 == 0}
    module.regularizers = [DER(alpha=1.0)]
    fit(module, train, epochs=2, batch_size=16, seed=0)
    assert torch.equal(module.backbone.net[1].weight, frozen)
    assert not torch.equal(module.backbone.net[3].weight, head)


# ---- the loop -----------------------------------------------------------------------------------


def test_head_only_fine_tuning_runs_a_drifting_image_stream_and_its_versions_serve(tmp_path, weights_file):
    _, path = weights_file
    stream = ColourStream()
    loop = deploy(
        stream,
        resnet(weights=str(path), freeze="all_but_head", lrs={"head": 1e-2}),
        run_dir=tmp_path / "run",
        update=StatefulUpdate(epochs=2, batch_size=32),
        settings=LoopSettings(warmup_windows=1, initial_epochs=2),
        logger=None,
    )
    result = loop.run()
    assert result.windows == 6 and len(result.versions) >= 2
    expected_by_version = {}
    x, _ = colour_images(16, seed=99, shift=1)
    for version in result.versions:
        expected_by_version[version] = loop.load(version).predict_logits(x).argmax(1).numpy()
    # Every version kept the pretrained trunk: only the head was fine-tuned.
    first, last = loop.load(result.versions[0]), loop.load(result.versions[-1])
    path.unlink()  # the server builds from the registry alone: the file training started from is not read
    store = ModelStore(loop.registry.root)
    for version in result.versions:
        served = store.load(version)
        labels, probabilities = served.predict(x)
        assert np.array_equal(labels, expected_by_version[version]) and probabilities.shape == (16, 3)
    assert torch.equal(first.backbone.layer3[0].conv1.weight, last.backbone.layer3[0].conv1.weight)
    assert not torch.equal(first.backbone.fc.weight, last.backbone.fc.weight)

"""Backbones a config can name with ``_target_``: an MLP for tables, a small CNN for images, and a
torchvision ResNet-18 for 3-channel images that can start from pretrained weights.

Every backbone takes ``weights`` (a safetensors file loaded before training; its output layer is
skipped, being new), ``freeze`` (parameter prefixes, or ``"all_but_head"``) and ``lrs`` (prefix ->
learning rate); see ``perennial.learn.pretrained``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models.resnet import BasicBlock, ResNet

from perennial.learn.pretrained import check_lrs, freeze, load_pretrained

Freeze = str | Sequence[str]


def _start(
    backbone: nn.Module, weights: str | None, frozen: Freeze, lrs: Mapping[str, float] | None
) -> dict[str, float]:
    """Load ``weights``, freeze, and return the checked per-prefix learning rates: at build time, so a
    bad file or name fails before any training starts."""
    if weights is not None:
        load_pretrained(backbone, weights)
    freeze(backbone, frozen if isinstance(frozen, str) else list(frozen or ()))
    return check_lrs(backbone, lrs)


class MLP(nn.Module):
    """A multilayer perceptron over flattened inputs.

    >>> MLP(in_shape=(8,), n_classes=2, hidden=(16,))(torch.zeros(4, 8)).shape
    torch.Size([4, 2])
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        n_classes: int,
        hidden: Sequence[int] = (64, 64),
        dropout: float = 0.0,
        weights: str | None = None,
        freeze: Freeze = (),
        lrs: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(in_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, n_classes))
        self.net = nn.Sequential(*layers)
        self.lrs = _start(self, weights, freeze, lrs)

    def forward(self, x):
        return self.net(x)


class SmallCNN(nn.Module):
    """Two conv blocks and a linear head, for small single-channel images (8x8 digits, 28x28 Fashion-MNIST).

    >>> SmallCNN(in_shape=(1, 28, 28), n_classes=10)(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        n_classes: int,
        channels: Sequence[int] = (16, 32),
        hidden: int = 64,
        weights: str | None = None,
        freeze: Freeze = (),
        lrs: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        chw = tuple(in_shape) if len(in_shape) == 3 else (1, *in_shape)
        blocks: list[nn.Module] = []
        c_in = chw[0]
        for c in channels:
            blocks += [nn.Conv2d(c_in, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True)]
            c_in = c
        self.features = nn.Sequential(*blocks, nn.Flatten())
        with torch.no_grad():
            flat = self.features(torch.zeros(1, *chw)).shape[1]
        self.head = nn.Sequential(nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))
        self.chw = chw
        self.lrs = _start(self, weights, freeze, lrs)

    def forward(self, x):
        return self.head(self.features(x.reshape(-1, *self.chw)))


class ResNet18(ResNet):
    """torchvision's ResNet-18 (parameter names as torchvision's, ``fc`` its output layer), for images.

    A file saved from ``torchvision.models.resnet18(...).state_dict()`` loads as ``weights`` (``fc``
    skipped). Single-channel images (digits, Fashion-MNIST) are repeated to 3 channels, so the pretrained
    first convolution applies; other channel counts are refused. Images smaller than ``min_size`` on a
    side are resized up to it (bilinear) rather than the stem changed, which would not fit pretrained
    weights: the ImageNet stem divides a side by 32. Inputs are used as given: normalise them as the
    pretrained weights expect. With frozen BatchNorm layers, their running statistics are frozen too.

    >>> net = ResNet18(in_shape=(1, 8, 8), n_classes=3, freeze="all_but_head", lrs={"head": 1e-2})
    >>> net(torch.zeros(2, 1, 8, 8)).shape, [n for n, p in net.named_parameters() if p.requires_grad]
    (torch.Size([2, 3]), ['fc.weight', 'fc.bias'])
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        n_classes: int,
        weights: str | None = None,
        freeze: Freeze = (),
        lrs: Mapping[str, float] | None = None,
        min_size: int = 64,
    ) -> None:
        chw = tuple(int(d) for d in in_shape)
        if len(chw) == 2:
            chw = (1, *chw)
        if len(chw) != 3 or chw[0] not in (1, 3):
            raise ValueError(
                f"ResNet18 reads images of shape (1 or 3, height, width), got in_shape {tuple(in_shape)!r}"
            )
        if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 1:
            raise ValueError(f"ResNet18 min_size must be an integer >= 1, got {min_size!r}")
        super().__init__(BasicBlock, [2, 2, 2, 2], num_classes=n_classes)
        self.chw, self.min_size = chw, min_size
        self.lrs = _start(self, weights, freeze, lrs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(-1, *self.chw)
        if self.chw[0] == 1:
            x = x.expand(-1, 3, -1, -1)
        h, w = x.shape[-2:]
        if min(h, w) < self.min_size:
            scale = self.min_size / min(h, w)
            size = (max(self.min_size, round(h * scale)), max(self.min_size, round(w * scale)))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return super().forward(x)

    def train(self, mode: bool = True) -> ResNet18:
        super().train(mode)
        # A frozen BatchNorm's running statistics would still follow each batch in train mode and shift
        # the features a trainable head reads; frozen means frozen.
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d) and not any(p.requires_grad for p in m.parameters()):
                m.eval()
        return self

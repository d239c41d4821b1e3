"""Backbones a config can name with ``_target_``: an MLP for tables and a small CNN for images."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Module):
    """A multilayer perceptron over flattened inputs.

    >>> MLP(in_shape=(8,), n_classes=2, hidden=(16,))(torch.zeros(4, 8)).shape
    torch.Size([4, 2])
    """

    def __init__(
        self, in_shape: Sequence[int], n_classes: int, hidden: Sequence[int] = (64, 64), dropout: float = 0.0
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

    def forward(self, x):
        return self.net(x)


class SmallCNN(nn.Module):
    """Two conv blocks and a linear head, for small single-channel images (8x8 digits, 28x28 Fashion-MNIST).

    >>> SmallCNN(in_shape=(1, 28, 28), n_classes=10)(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self, in_shape: Sequence[int], n_classes: int, channels: Sequence[int] = (16, 32), hidden: int = 64
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

    def forward(self, x):
        return self.head(self.features(x.reshape(-1, *self.chw)))

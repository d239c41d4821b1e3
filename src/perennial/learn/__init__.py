"""Models and training: backbones, the LightningModule, replay buffers and the two update kinds."""

from perennial.learn.backbones import MLP, SmallCNN
from perennial.learn.module import ClassifierModule
from perennial.learn.replay import ClassBalancedBuffer, ReplayBuffer, ReservoirBuffer
from perennial.learn.strategies import DER, EWC, LwF, Regularizer
from perennial.learn.updater import HybridUpdate, StatefulUpdate, StatelessUpdate, TrainedCandidate, Update

__all__ = [
    "DER",
    "EWC",
    "MLP",
    "ClassBalancedBuffer",
    "ClassifierModule",
    "HybridUpdate",
    "LwF",
    "Regularizer",
    "ReplayBuffer",
    "ReservoirBuffer",
    "SmallCNN",
    "StatefulUpdate",
    "StatelessUpdate",
    "TrainedCandidate",
    "Update",
]

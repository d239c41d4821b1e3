"""Models and training: backbones, the LightningModule, replay buffers and the two update kinds."""

from perennial.learn.backbones import MLP, ResNet18, SmallCNN
from perennial.learn.module import ClassifierModule, RegressorModule
from perennial.learn.replay import ClassBalancedBuffer, ReplayBuffer, ReservoirBuffer
from perennial.learn.strategies import DER, EWC, LwF, Regularizer
from perennial.learn.updater import HybridUpdate, StatefulUpdate, StatelessUpdate, TrainedCandidate, Update
from perennial.learn.user_module import UserModule

__all__ = [
    "DER",
    "EWC",
    "MLP",
    "ClassBalancedBuffer",
    "ClassifierModule",
    "HybridUpdate",
    "LwF",
    "RegressorModule",
    "Regularizer",
    "ReplayBuffer",
    "ResNet18",
    "ReservoirBuffer",
    "SmallCNN",
    "StatefulUpdate",
    "StatelessUpdate",
    "TrainedCandidate",
    "Update",
    "UserModule",
]

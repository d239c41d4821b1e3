"""perennial: keep deep models fresh in production.

The main parts are here by name (``perennial.deploy``, ``perennial.WeatherStream``,
``perennial.StatefulUpdate``, ...), each imported on first use: ``import perennial`` itself loads
neither torch nor the loop, so a command that only needs a little of perennial starts fast.

>>> import perennial
>>> "deploy" in dir(perennial) and perennial.LoopSettings().warmup_windows
3
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Each public name and the module it is imported from when first asked for (PEP 562).
_EXPORTS = {
    # the entry point, the loop and its result
    "deploy": "perennial.api",
    "model_builder": "perennial.api",
    "ContinuousDeployment": "perennial.loop",
    "LoopSettings": "perennial.loop",
    "RunResult": "perennial.loop.result",
    # streams
    "Stream": "perennial.data",
    "Window": "perennial.data",
    "WindowFeed": "perennial.data",
    "WeatherStream": "perennial.data",
    "SyntheticStream": "perennial.data",
    "TableStream": "perennial.data",
    "open_table": "perennial.data",
    "DigitsStream": "perennial.data",
    "FashionMNISTStream": "perennial.data",
    "DataError": "perennial.data",
    # models, updates, replay and anti-forgetting strategies
    "MLP": "perennial.learn",
    "SmallCNN": "perennial.learn",
    "ResNet18": "perennial.learn",
    "UserModule": "perennial.learn",
    "StatefulUpdate": "perennial.learn",
    "StatelessUpdate": "perennial.learn",
    "HybridUpdate": "perennial.learn",
    "ReplayBuffer": "perennial.learn",
    "ReservoirBuffer": "perennial.learn",
    "ClassBalancedBuffer": "perennial.learn",
    "EWC": "perennial.learn",
    "LwF": "perennial.learn",
    "DER": "perennial.learn",
    # triggers
    "EveryWindow": "perennial.triggers",
    "TimeTrigger": "perennial.triggers",
    "VolumeTrigger": "perennial.triggers",
    "PerformanceTrigger": "perennial.triggers",
    "DriftTrigger": "perennial.triggers",
    "AnyOf": "perennial.triggers",
    "AllOf": "perennial.triggers",
    # the gate, the screen, live rollouts
    "PromotionGate": "perennial.evaluate",
    "WindowScreen": "perennial.evaluate",
    "Shadow": "perennial.rollout",
    "AB": "perennial.rollout",
    "Canary": "perennial.rollout",
    "Interleave": "perennial.rollout",
    # the registry and the run's log
    "Registry": "perennial.registry",
    "CSVLogger": "perennial.tracking",
}

# The names above, listed for static tools (tests check that the two agree).
__all__ = [
    "AB",
    "DER",
    "EWC",
    "MLP",
    "AllOf",
    "AnyOf",
    "CSVLogger",
    "Canary",
    "ClassBalancedBuffer",
    "ContinuousDeployment",
    "DataError",
    "DigitsStream",
    "DriftTrigger",
    "EveryWindow",
    "FashionMNISTStream",
    "HybridUpdate",
    "Interleave",
    "LoopSettings",
    "LwF",
    "PerformanceTrigger",
    "PromotionGate",
    "Registry",
    "ReplayBuffer",
    "ResNet18",
    "ReservoirBuffer",
    "RunResult",
    "Shadow",
    "SmallCNN",
    "StatefulUpdate",
    "StatelessUpdate",
    "Stream",
    "SyntheticStream",
    "TableStream",
    "TimeTrigger",
    "UserModule",
    "VolumeTrigger",
    "WeatherStream",
    "Window",
    "WindowFeed",
    "WindowScreen",
    "__version__",
    "deploy",
    "model_builder",
    "open_table",
]

if TYPE_CHECKING:  # what type checkers and editors see; at run time, __getattr__ imports on demand
    from perennial.api import deploy, model_builder
    from perennial.data import (
        DataError,
        DigitsStream,
        FashionMNISTStream,
        Stream,
        SyntheticStream,
        TableStream,
        WeatherStream,
        Window,
        WindowFeed,
        open_table,
    )
    from perennial.evaluate import PromotionGate, WindowScreen
    from perennial.learn import (
        DER,
        EWC,
        MLP,
        ClassBalancedBuffer,
        HybridUpdate,
        LwF,
        ReplayBuffer,
        ReservoirBuffer,
        ResNet18,
        SmallCNN,
        StatefulUpdate,
        StatelessUpdate,
        UserModule,
    )
    from perennial.loop import ContinuousDeployment, LoopSettings
    from perennial.loop.result import RunResult
    from perennial.registry import Registry
    from perennial.rollout import AB, Canary, Interleave, Shadow
    from perennial.tracking import CSVLogger
    from perennial.triggers import (
        AllOf,
        AnyOf,
        DriftTrigger,
        EveryWindow,
        PerformanceTrigger,
        TimeTrigger,
        VolumeTrigger,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'perennial' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # asked for once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

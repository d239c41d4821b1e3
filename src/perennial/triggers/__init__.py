"""Triggers decide when to update: every window, on a clock, when enough new labelled data arrived,
when performance drops, when the data drifts, or any or all of these."""

from perennial.triggers.base import Cooldown, Firing, Observation, Trigger
from perennial.triggers.compose import AllOf, AnyOf
from perennial.triggers.drift import DriftTrigger
from perennial.triggers.performance import PerformanceTrigger
from perennial.triggers.schedule import EveryWindow, TimeTrigger, VolumeTrigger

__all__ = [
    "AllOf",
    "AnyOf",
    "Cooldown",
    "DriftTrigger",
    "EveryWindow",
    "Firing",
    "Observation",
    "PerformanceTrigger",
    "TimeTrigger",
    "Trigger",
    "VolumeTrigger",
]

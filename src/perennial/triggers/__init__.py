"""Triggers decide when to update: every window, on a clock, or when enough new labelled data arrived."""

from perennial.triggers.base import Firing, Observation, Trigger
from perennial.triggers.schedule import EveryWindow, TimeTrigger, VolumeTrigger

__all__ = ["EveryWindow", "Firing", "Observation", "TimeTrigger", "Trigger", "VolumeTrigger"]

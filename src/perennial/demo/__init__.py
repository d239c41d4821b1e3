"""The closed loop run end to end on one machine (``perennial-demo``): ``processes`` starts and stops
the server and the loop, ``traffic`` plays rows as live HTTP requests with their feedback, ``watch``
reads what the loop and the server decide, and ``closed_loop`` puts them together."""

from perennial.demo.closed_loop import ClosedLoop, DemoSettings
from perennial.demo.processes import ManagedProcess, Processes, ProcessFailed, free_port
from perennial.demo.traffic import RequestRecord, TrafficPlayer
from perennial.demo.watch import Event, RegistryWatcher, VersionTrack

__all__ = [
    "ClosedLoop",
    "DemoSettings",
    "Event",
    "ManagedProcess",
    "ProcessFailed",
    "Processes",
    "RegistryWatcher",
    "RequestRecord",
    "TrafficPlayer",
    "VersionTrack",
    "free_port",
]

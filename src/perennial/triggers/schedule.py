"""Triggers that need no statistics: every window, every N windows or a duration, and data volume."""

from __future__ import annotations

import pandas as pd

from perennial.triggers.base import Firing, Observation, Trigger


class EveryWindow(Trigger):
    """Update after every labelled window."""

    name = "every_window"

    def __init__(self) -> None:
        self.pending = 0

    def update(self, obs: Observation) -> None:
        self.pending += 1

    def fires(self) -> Firing | None:
        return Firing(self.name, "new labelled window") if self.pending else None

    def reset(self) -> None:
        self.pending = 0


class TimeTrigger(Trigger):
    """Update every ``every`` windows (an int) or once a duration ("30D", "12h") has passed.

    Durations need windows whose ``end`` is a timestamp (tables with a time column); streams
    indexed by row position (weather, synthetic, images) take a window count.
    """

    name = "time"

    def __init__(self, every: int | str = 1) -> None:
        if isinstance(every, int) or str(every).isdigit():
            if int(every) < 1:
                raise ValueError(f"trigger.every must be >= 1 window, got {every}")
            self.every: int | str = int(every)
        else:
            try:
                pd.Timedelta(every)
            except ValueError as err:
                raise ValueError(
                    f"trigger.every must be a window count or a duration like '30D', got {every!r}"
                ) from err
            self.every = str(every)
        self.windows_since = 0
        self.since: str | None = None
        self.latest: str | None = None

    def update(self, obs: Observation) -> None:
        self.windows_since += 1
        if isinstance(self.every, str):
            if not isinstance(obs.window.end, pd.Timestamp):
                raise ValueError(
                    f"trigger.every={self.every!r} is a duration, but window {obs.window.index} ends at "
                    f"{obs.window.end!r}, not a timestamp; use a window count such as trigger.every=2"
                )
            self.latest = obs.window.end.isoformat()
            self.since = self.since or pd.Timestamp(obs.window.start).isoformat()

    def fires(self) -> Firing | None:
        if isinstance(self.every, int):
            if self.windows_since >= self.every:
                return Firing(self.name, f"{self.windows_since} windows since the last update")
            return None
        if self.since and self.latest:
            elapsed = pd.Timestamp(self.latest) - pd.Timestamp(self.since)
            if elapsed >= pd.Timedelta(self.every):
                return Firing(self.name, f"{elapsed} since the last update")
        return None

    def reset(self) -> None:
        self.windows_since = 0
        self.since = self.latest


class VolumeTrigger(Trigger):
    """Update once new labelled examples reach ``fraction`` of what the champion was trained on.

    >>> t = VolumeTrigger(fraction=0.5)
    >>> t.new_samples, t.champion_samples = 40, 100
    >>> t.fires() is None
    True
    """

    name = "volume"

    def __init__(self, fraction: float = 0.25) -> None:
        if fraction <= 0:
            raise ValueError(f"trigger.fraction must be > 0, got {fraction}")
        self.fraction = fraction
        self.new_samples = 0
        self.champion_samples = 0

    def update(self, obs: Observation) -> None:
        self.new_samples += len(obs.window)
        self.champion_samples = obs.champion_samples

    def fires(self) -> Firing | None:
        ratio = self.new_samples / max(self.champion_samples, 1)
        if ratio >= self.fraction:
            return Firing(
                self.name,
                f"{self.new_samples} new labelled examples, {ratio:.0%} of the champion's",
                statistic=ratio,
            )
        return None

    def reset(self) -> None:
        self.new_samples = 0

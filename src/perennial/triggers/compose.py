"""Triggers made of triggers: fire when any one fires, or only when all of them do."""

from __future__ import annotations

import math
from collections.abc import Sequence

from perennial.triggers.base import Cooldown, Firing, Observation, Trigger


class _Composite(Trigger):
    def __init__(self, triggers: Sequence[Trigger], cooldown: int = 0) -> None:
        triggers = list(triggers)
        if not triggers:
            raise ValueError(f"trigger={self.name} needs a non-empty trigger.triggers list")
        bad = [t for t in triggers if not isinstance(t, Trigger)]
        if bad:
            raise ValueError(f"trigger.triggers must all be triggers, got {bad!r}")
        self._triggers = triggers
        self._cooldown = Cooldown(cooldown)

    def update(self, obs: Observation) -> None:
        self._cooldown.tick()
        for t in self._triggers:
            t.update(obs)

    def _combine(self, firings: list[Firing]) -> Firing:
        """One firing for several: the first one's numbers, every reason."""
        first = firings[0]
        return Firing(
            self.name,
            "; ".join(f"{f.name}: {f.reason}" for f in firings),
            statistic=first.statistic,
            p_value=first.p_value,
            extra={"fired": [f.to_dict() for f in firings]},
        )

    def last_test(self) -> dict[str, float]:
        """The first member's test that has a p-value, else the first with a statistic."""
        tests = [t.last_test() for t in self._triggers]
        with_p = [x for x in tests if not math.isnan(x.get("p_value", math.nan))]
        return (with_p or [x for x in tests if x] or [{}])[0]

    def reset(self) -> None:
        self._cooldown.reset()
        for t in self._triggers:
            t.reset()

    def state_dict(self) -> dict:
        return {"cooldown": self._cooldown.state_dict(), "triggers": [t.state_dict() for t in self._triggers]}

    def load_state_dict(self, state: dict) -> None:
        self._cooldown.load_state_dict(state["cooldown"])
        for t, s in zip(self._triggers, state["triggers"], strict=True):
            t.load_state_dict(s)


class AnyOf(_Composite):
    """Fires when any member fires (e.g. a drift test, or a year at the latest)."""

    name = "any"

    def fires(self) -> Firing | None:
        firings = [f for t in self._triggers if (f := t.fires()) is not None]
        return self._combine(firings) if firings and self._cooldown.ready() else None


class AllOf(_Composite):
    """Fires only when every member fires (e.g. drift confirmed by a drop in accuracy)."""

    name = "all"

    def fires(self) -> Firing | None:
        firings = [t.fires() for t in self._triggers]
        if all(f is not None for f in firings) and self._cooldown.ready():
            return self._combine(firings)
        return None

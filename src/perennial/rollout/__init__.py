"""Online evaluation: routing live traffic to candidates, and the statistics that decide.

- ``Router``: sticky, salted assignment of units to arms, with weights that only grow;
- ``ShadowDeployment``, ``ABTest``, ``CanaryRollout``: the rollouts, usable behind any server;
- ``Shadow``, ``AB``, ``Canary``, ``Interleave`` (``perennial.rollout.live``): the same, as the loop
  drives them (``Interleave`` treats a classifier as a ranker of labels);
- ``MixtureSPRT`` (``perennial.stats.sequential``), the test they decide with; fixed-horizon tests
  and CUPED are in ``perennial.stats.tests``, power and sample sizes in ``perennial.stats.power``;
- ``perennial.rollout.interleaving`` and ``perennial.rollout.clicks``: interleaved comparisons of
  rankers and the click models that simulate users.
"""

from perennial.rollout.ab import ABTest
from perennial.rollout.canary import CanaryRollout
from perennial.rollout.live import AB, Canary, Interleave, Rollout, Shadow
from perennial.rollout.router import Router
from perennial.rollout.shadow import ShadowDeployment
from perennial.stats.sequential import MixtureSPRT

__all__ = [
    "AB",
    "ABTest",
    "Canary",
    "CanaryRollout",
    "Interleave",
    "MixtureSPRT",
    "Rollout",
    "Router",
    "Shadow",
    "ShadowDeployment",
]

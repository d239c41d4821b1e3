"""Interleaving: compare two rankers on the same impression by mixing their lists and crediting clicks.

One interleaved list per impression replaces an A/B split: every user sees both rankers at once,
so the comparison needs one to two orders of magnitude fewer users (Chapelle et al., TOIS 2012).
Three methods: team-draft (Radlinski, Kurup & Joachims 2008), balanced (Joachims 2003) and
probabilistic (Hofmann, Whiteson & de Rijke 2011). Each impression ends in a win for ``"a"``, a
win for ``"b"`` or a tie; :func:`sign_test` decides over many impressions.

>>> rng = np.random.default_rng(0)
>>> shown = team_draft(["x", "y", "z"], ["z", "y", "x"], rng)
>>> shown.shown, shown.teams
(('x', 'z', 'y'), ('a', 'b', 'a'))
>>> credit(shown, clicked_positions=[1])  # a click on 'z', which ranker B placed
Outcome(winner='b', clicks_a=0, clicks_b=1, score=1.0)
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

METHODS = ("team_draft", "balanced", "probabilistic")
WINNERS = ("a", "b", "tie")


@dataclass(frozen=True)
class Interleaving:
    """One interleaved impression: what was shown, and what :func:`credit` needs to score its clicks.

    ``shown`` is the list of item ids in display order. ``rankings`` holds the two source rankings
    ``(a, b)``; balanced interleaving credits through them. ``teams`` says, per shown position,
    which ranker placed the item (``"a"`` or ``"b"``; team-draft and probabilistic, else None).
    ``prob_a`` (probabilistic only) is the chance that ranker A placed each position given the shown
    list, over which probabilistic credit is marginalised.
    """

    method: str
    shown: tuple
    rankings: tuple[tuple, tuple]
    teams: tuple[str, ...] | None = None
    prob_a: tuple[float, ...] | None = None

    def __len__(self) -> int:
        return len(self.shown)


@dataclass(frozen=True)
class Outcome:
    """The verdict of one impression: ``winner`` is ``"a"``, ``"b"`` or ``"tie"``.

    ``clicks_a`` / ``clicks_b`` are the clicks credited to each ranker (expected counts for
    probabilistic interleaving). ``score`` is ``P(b wins) - P(a wins)`` for this impression:
    +1, -1 or 0 for team-draft and balanced, a number in [-1, 1] for probabilistic.
    """

    winner: str
    clicks_a: float
    clicks_b: float
    score: float


def team_draft(
    a: Sequence[Hashable], b: Sequence[Hashable], rng: np.random.Generator, length: int | None = None
) -> Interleaving:
    """Team-draft interleaving: rankers take turns, like captains picking teams, each adding its best
    item not yet shown; a coin decides who picks first whenever both teams are the same size.

    ``length`` caps the shown list (default: every item of either ranking). Once one ranking has
    no unshown items left, the other fills the remaining positions.

    >>> picks = team_draft([1, 2, 3, 4], [3, 4, 1, 2], np.random.default_rng(1), length=4)
    >>> picks.shown, picks.teams
    ((3, 1, 2, 4), ('b', 'a', 'a', 'b'))
    """
    a, b = _ranking(a, "a"), _ranking(b, "b")
    _check_rng(rng)
    length = _length(length, a, b)
    shown: list = []
    teams: list[str] = []
    placed: set = set()
    next_a = next_b = 0  # first position in each ranking that may still be unshown
    size_a = size_b = 0
    while len(shown) < length:
        while next_a < len(a) and a[next_a] in placed:
            next_a += 1
        while next_b < len(b) and b[next_b] in placed:
            next_b += 1
        a_left, b_left = next_a < len(a), next_b < len(b)
        if not (a_left or b_left):
            break
        a_picks = a_left and (not b_left or size_a < size_b or (size_a == size_b and bool(rng.integers(2))))
        item = a[next_a] if a_picks else b[next_b]
        shown.append(item)
        placed.add(item)
        teams.append("a" if a_picks else "b")
        size_a += a_picks
        size_b += not a_picks
    return Interleaving("team_draft", tuple(shown), (a, b), teams=tuple(teams))


def balanced(
    a: Sequence[Hashable], b: Sequence[Hashable], rng: np.random.Generator, length: int | None = None
) -> Interleaving:
    """Balanced interleaving: the shown list alternates between the two rankings from the top (a coin
    decides which goes first), skipping items already shown, so that every prefix of it is the union
    of the top ``k`` of one ranking and the top ``k`` or ``k + 1`` of the other.

    Biased: when the rankings overlap heavily, random clicks (users who prefer neither) credit one
    ranker more often than the other (Chapelle et al. 2012 note it; ``scripts/bench_online.py``
    measures it in ``docs/benchmarks.md``). Kept for comparisons with published results; live
    rollouts use team-draft or probabilistic interleaving, which a coin makes fair.

    >>> mixed = balanced(["p", "q", "r"], ["q", "s", "p"], np.random.default_rng(0))
    >>> mixed.shown
    ('p', 'q', 's', 'r')
    """
    a, b = _ranking(a, "a"), _ranking(b, "b")
    _check_rng(rng)
    length = _length(length, a, b)
    a_first = bool(rng.integers(2))
    shown: list = []
    placed: set = set()
    k_a = k_b = 0
    while len(shown) < length and (k_a < len(a) or k_b < len(b)):
        take_a = k_b >= len(b) or (k_a < len(a) and (k_a < k_b or (k_a == k_b and a_first)))
        item = a[k_a] if take_a else b[k_b]
        if take_a:
            k_a += 1
        else:
            k_b += 1
        if item not in placed:
            shown.append(item)
            placed.add(item)
    return Interleaving("balanced", tuple(shown), (a, b))


def probabilistic(
    a: Sequence[Hashable],
    b: Sequence[Hashable],
    rng: np.random.Generator,
    length: int | None = None,
    tau: float = 3.0,
) -> Interleaving:
    """Probabilistic interleaving: each position, a coin picks a ranker, which draws one of the items
    not yet shown with probability proportional to ``1 / rank ** tau`` (a softmax over its ranks).

    Every item can appear at any position, so any two rankings can be compared fairly; the credit is
    marginalised over which ranker could have placed each item. An item missing from one ranking
    counts, for it, as ranked just after that ranking's last item.

    >>> mixed = probabilistic([1, 2, 3], [3, 2, 1], np.random.default_rng(0))
    >>> mixed.shown, [round(p, 2) for p in mixed.prob_a]
    ((1, 2, 3), [0.96, 0.87, 0.5])
    """
    a, b = _ranking(a, "a"), _ranking(b, "b")
    _check_rng(rng)
    length = _length(length, a, b)
    if not (isinstance(tau, int | float) and tau > 0 and math.isfinite(tau)):
        raise ValueError(f"tau must be a finite number > 0, got {tau!r}")
    items = list(dict.fromkeys((*a, *b)))
    weights = {}
    for name, ranking in (("a", a), ("b", b)):
        rank = {item: r for r, item in enumerate(ranking, start=1)}
        weights[name] = np.array([(rank.get(item, len(ranking) + 1)) ** -float(tau) for item in items])
    remaining = np.ones(len(items), bool)
    shown: list = []
    teams: list[str] = []
    prob_a: list[float] = []
    for _ in range(length):
        team = "a" if rng.integers(2) else "b"
        p = {name: np.where(remaining, w, 0.0) / w[remaining].sum() for name, w in weights.items()}
        pick = int(rng.choice(len(items), p=p[team]))
        shown.append(items[pick])
        teams.append(team)
        prob_a.append(float(p["a"][pick] / (p["a"][pick] + p["b"][pick])))
        remaining[pick] = False
    return Interleaving("probabilistic", tuple(shown), (a, b), teams=tuple(teams), prob_a=tuple(prob_a))


def credit(interleaving: Interleaving, clicked_positions: Iterable[int]) -> Outcome:
    """Score one impression's clicks (0-based positions in ``interleaving.shown``; a position listed
    twice counts once) by the method's own rule.

    - team-draft: each click credits the ranker that placed the item; more clicks wins.
    - balanced: take the lowest click, and ``k``, the better of its ranks in A and in B; each ranker
      is credited with the clicked items in its own top ``k``; more wins.
    - probabilistic: ``winner`` is the team-draft rule applied to the teams the coin actually drew
      (``interleaving.teams``), so with random clicks each ranker wins as often as the other;
      ``score`` and the click counts are that rule averaged over every way the two rankers could
      have placed the shown items (Hofmann et al.'s marginalised credit). ``score`` has the same
      mean as the drawn outcome and a smaller variance, so it suits a test of the mean (the live
      rollout's); its *sign* is no fair winner: with overlapping rankings and random clicks it
      favours one ranker (``docs/benchmarks.md``, interleaving A/A).

    >>> mixed = balanced(["a1", "a2"], ["b1", "b2"], np.random.default_rng(0))
    >>> mixed.shown
    ('a1', 'b1', 'a2', 'b2')
    >>> credit(mixed, [0, 1, 2])  # lowest click a2 is rank 2 in A: k = 2, A's top 2 both clicked
    Outcome(winner='a', clicks_a=2, clicks_b=1, score=-1.0)
    """
    clicked = _clicked(interleaving, clicked_positions)
    if interleaving.method == "team_draft":
        assert interleaving.teams is not None
        clicks_a = sum(interleaving.teams[p] == "a" for p in clicked)
        return _verdict(clicks_a, len(clicked) - clicks_a)
    if interleaving.method == "balanced":
        return _balanced_credit(interleaving, clicked)
    if interleaving.method == "probabilistic":
        assert interleaving.prob_a is not None and interleaving.teams is not None
        drawn = _verdict(*(sum(interleaving.teams[p] == t for p in clicked) for t in ("a", "b")))
        return _probabilistic_credit([interleaving.prob_a[p] for p in clicked], drawn.winner)
    raise ValueError(f"unknown interleaving method {interleaving.method!r}; accepted: {list(METHODS)}")


@dataclass(frozen=True)
class SignTestResult:
    """Which ranker users prefer, over many impressions.

    ``delta = (wins_b - wins_a) / (wins_a + wins_b + ties)``: the preference for B over all
    impressions, ties included (twice the Δ of Chapelle et al. 2012, so in [-1, 1]; > 0 favours B).
    ``share_b = wins_b / (wins_a + wins_b)``: B's share of the decided impressions (nan if none).
    ``p_value`` is the two-sided exact binomial test of ``share_b = 1/2`` on the decided impressions
    (ties carry no information about the direction). ``preferred`` is ``"a"`` or ``"b"`` when
    ``p_value < alpha``, else None.
    """

    wins_a: int
    wins_b: int
    ties: int
    p_value: float
    delta: float
    share_b: float
    preferred: str | None


def sign_test(wins_a: int, wins_b: int, ties: int = 0, alpha: float = 0.05) -> SignTestResult:
    """Two-sided sign test of "neither ranker is preferred" (``scipy.stats.binomtest``).

    The wins must come from a rule that is fair when users prefer neither ranker: team-draft's, or
    probabilistic interleaving's drawn teams (what :func:`credit` returns as ``winner``), not the
    sign of a marginalised score, whose median is not its mean.

    >>> result = sign_test(wins_a=40, wins_b=60, ties=100)
    >>> round(result.p_value, 4), result.delta, result.share_b, result.preferred
    (0.0569, 0.1, 0.6, None)
    """
    counts = {"wins_a": wins_a, "wins_b": wins_b, "ties": ties}
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    wins_a, wins_b, ties = int(wins_a), int(wins_b), int(ties)
    decided = wins_a + wins_b
    p_value = float(stats.binomtest(wins_b, decided, 0.5).pvalue) if decided else 1.0
    total = decided + ties
    delta = (wins_b - wins_a) / total if total else 0.0
    share_b = wins_b / decided if decided else math.nan
    preferred = None
    if p_value < alpha:
        preferred = "b" if wins_b > wins_a else "a"
    return SignTestResult(wins_a, wins_b, ties, p_value, delta, share_b, preferred)


class InterleavingTally:
    """Wins, losses and ties of an interleaving experiment, accumulated impression by impression.

    torchmetrics-style: ``update(outcome)`` adds one, ``compute()`` runs the sign test, ``reset()``
    clears, and ``state_dict()`` is plain JSON.

    >>> tally = InterleavingTally()
    >>> for winner in ["a"] + ["b"] * 8 + ["tie"]:
    ...     tally.update(Outcome(winner, 0, 0, 0.0))
    >>> tally.wins_a, tally.wins_b, tally.ties, round(tally.compute().p_value, 3)
    (1, 8, 1, 0.039)
    """

    def __init__(self, alpha: float = 0.05) -> None:
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
        self.alpha = float(alpha)
        self.reset()

    def reset(self) -> None:
        self.wins_a = self.wins_b = self.ties = 0

    def __len__(self) -> int:
        return self.wins_a + self.wins_b + self.ties

    def update(self, outcome: Outcome) -> None:
        if outcome.winner not in WINNERS:
            raise ValueError(f"outcome.winner must be one of {list(WINNERS)}, got {outcome.winner!r}")
        if outcome.winner == "a":
            self.wins_a += 1
        elif outcome.winner == "b":
            self.wins_b += 1
        else:
            self.ties += 1

    def compute(self) -> SignTestResult:
        return sign_test(self.wins_a, self.wins_b, self.ties, alpha=self.alpha)

    def state_dict(self) -> dict:
        return {"wins_a": self.wins_a, "wins_b": self.wins_b, "ties": self.ties}

    def load_state_dict(self, state: dict) -> None:
        self.wins_a, self.wins_b, self.ties = int(state["wins_a"]), int(state["wins_b"]), int(state["ties"])


# -- checks and credit rules ----------------------------------------------------------------------


def _ranking(ranking: Sequence[Hashable], name: str) -> tuple:
    ranking = tuple(ranking)
    if not ranking:
        raise ValueError(f"ranking {name} is empty; a ranking needs at least one item")
    first_at: dict = {}
    for position, item in enumerate(ranking):
        if item in first_at:
            raise ValueError(
                f"ranking {name} holds item {item!r} twice (positions {first_at[item]} and {position}); "
                f"an item can be shown only once per impression"
            )
        first_at[item] = position
    return ranking


def _check_rng(rng: object) -> None:
    # A seed or the global numpy state would make impressions irreproducible from the caller's seed.
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy Generator (np.random.default_rng(seed)), got {type(rng).__name__}"
        )


def _length(length: int | None, a: tuple, b: tuple) -> int:
    available = len(set(a) | set(b))
    if length is None:
        return available
    if isinstance(length, bool) or not isinstance(length, int | np.integer) or length < 1:
        raise ValueError(f"length must be a whole number >= 1, got {length!r}")
    return min(int(length), available)


def _clicked(interleaving: Interleaving, positions: Iterable[int]) -> list[int]:
    n = len(interleaving.shown)
    clicked = set()
    for position in positions:
        if isinstance(position, bool) or not isinstance(position, int | np.integer) or not 0 <= position < n:
            raise ValueError(
                f"clicked position {position!r} is outside the shown list (positions 0..{n - 1})"
            )
        clicked.add(int(position))
    return sorted(clicked)


def _verdict(clicks_a: float, clicks_b: float) -> Outcome:
    if clicks_a > clicks_b:
        return Outcome("a", clicks_a, clicks_b, -1.0)
    if clicks_b > clicks_a:
        return Outcome("b", clicks_a, clicks_b, 1.0)
    return Outcome("tie", clicks_a, clicks_b, 0.0)


def _balanced_credit(interleaving: Interleaving, clicked: list[int]) -> Outcome:
    if not clicked:
        return _verdict(0, 0)
    a, b = interleaving.rankings
    rank_a = {item: r for r, item in enumerate(a, start=1)}
    rank_b = {item: r for r, item in enumerate(b, start=1)}
    lowest = interleaving.shown[clicked[-1]]
    k = min(rank_a.get(lowest, math.inf), rank_b.get(lowest, math.inf))
    items = [interleaving.shown[p] for p in clicked]
    clicks_a = sum(rank_a.get(item, math.inf) <= k for item in items)
    clicks_b = sum(rank_b.get(item, math.inf) <= k for item in items)
    return _verdict(clicks_a, clicks_b)


def _probabilistic_credit(prob_a: list[float], winner: str) -> Outcome:
    # Given the shown list, the assignments of positions to rankers are independent, so the
    # distribution of (clicks_b - clicks_a) is a convolution, one clicked position at a time.
    n = len(prob_a)
    diff = np.zeros(2 * n + 1)  # index n + d holds P(clicks_b - clicks_a = d)
    diff[n] = 1.0
    for q in prob_a:
        diff = q * np.roll(diff, -1) + (1 - q) * np.roll(diff, 1)
    score = float(diff[n + 1 :].sum() - diff[:n].sum())
    expected_a = float(sum(prob_a))
    return Outcome(winner, expected_a, n - expected_a, 0.0 if abs(score) < 1e-12 else score)

"""Maximum mean discrepancy with a Gaussian kernel and a permutation test: one test over all
features at once, for raw inputs or a model's embeddings, on CPU or GPU."""

from __future__ import annotations

import math

import numpy as np
import torch

from perennial.drift.base import (
    DriftResult,
    TwoSampleDetector,
    check_alpha,
    not_enough_data,
    paired_rows,
    row_shortfall,
)

MIN_ROWS = 10
# Permutation weights per batch (rows x pooled samples); bounds the memory of one A @ K product.
BATCH_ELEMENTS = 1 << 24


class MMDDrift(TwoSampleDetector):
    """Kernel two-sample test: drift when the permutation p-value of MMD² is below ``alpha``.

    - The statistic is the biased (V-statistic) estimate of MMD² with the Gaussian kernel
      ``exp(-|x - y|² / (2 bandwidth²))``; ``bandwidth="median"`` takes the median pairwise
      distance in the pooled sample.
    - The p-value is ``(1 + #{permuted MMD² >= observed}) / (1 + n_permutations)``. Permutations
      come from a ``torch.Generator`` seeded with ``seed``, so a result repeats exactly.
    - The pooled kernel matrix K is computed once; every permutation is a row of weights A
      (+1/n for rows labelled reference, -1/m for current), and a batch of MMD² values is
      ``rowsum((A @ K) * A)``: one matrix product instead of a Python loop.
    - Computes in float32 (the p-value needs the order of the statistics, not their last digits);
      memory grows with the square of the rows, so ``max_samples`` subsamples each side (seeded).
    - Rows with NaN or inf are dropped; fewer than 10 rows left in either sample gives
      ``drift=None``. If the median distance is 0 (rows mostly repeated), the median of the
      non-zero distances is used, or 1.0 when there are none; identical rows throughout are no drift.

    >>> rng = np.random.default_rng(0)
    >>> reference = rng.normal(size=(200, 8))
    >>> detector = MMDDrift(n_permutations=200, device="cpu")
    >>> detector.test(reference, rng.normal(size=(200, 8))).drift
    False
    >>> shifted = detector.test(reference, rng.normal(0.5, 1.0, size=(200, 8)))
    >>> shifted.drift, shifted.p_value
    (True, 0.004975...)
    """

    name = "mmd"

    def __init__(
        self,
        alpha: float = 0.05,
        n_permutations: int = 500,
        bandwidth: str | float = "median",
        max_samples: int | None = None,
        device: str = "auto",
        seed: int = 0,
    ) -> None:
        self.alpha = check_alpha(alpha)
        if n_permutations < 1:
            raise ValueError(f"n_permutations must be >= 1, got {n_permutations}")
        if bandwidth != "median" and not (isinstance(bandwidth, int | float) and bandwidth > 0):
            raise ValueError(f"bandwidth must be 'median' or a number > 0, got {bandwidth!r}")
        if max_samples is not None and max_samples < MIN_ROWS:
            raise ValueError(f"max_samples must be None or >= {MIN_ROWS}, got {max_samples}")
        if device != "auto":
            try:
                torch.device(device)
            except RuntimeError as err:
                raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from err
        self.n_permutations = int(n_permutations)
        self.bandwidth = bandwidth if bandwidth == "median" else float(bandwidth)
        self.max_samples = max_samples
        self.device = device
        self.seed = int(seed)

    def test(self, reference: np.ndarray, current: np.ndarray) -> DriftResult:
        ref, cur = paired_rows(reference, current)
        ref_finite, cur_finite = np.isfinite(ref).all(axis=1), np.isfinite(cur).all(axis=1)
        details: dict = {
            "dropped_reference_rows": int((~ref_finite).sum()),
            "dropped_current_rows": int((~cur_finite).sum()),
        }
        ref, cur = ref[ref_finite], cur[cur_finite]
        shortfall = row_shortfall(len(ref), len(cur), MIN_ROWS)
        if shortfall:
            return not_enough_data(self.name, shortfall, details)
        if np.all(ref == ref[0]) and np.all(cur == ref[0]):
            # Every relabelling gives MMD² = 0 exactly; in float32 they would differ by rounding noise.
            details.update(n_reference=len(ref), n_current=len(cur), note="all rows are identical")
            return DriftResult(self.name, False, 0.0, 1.0, "no drift: all rows are identical", details)

        device = torch.device(self._device_name())
        # Draws happen on the CPU so a seed gives the same subsamples and permutations on any device.
        generator = torch.Generator().manual_seed(self.seed)
        ref_rows, cur_rows = (self._subsample(torch.from_numpy(x), generator) for x in (ref, cur))
        n, m = len(ref_rows), len(cur_rows)
        pooled = torch.cat([ref_rows, cur_rows]).to(device=device, dtype=torch.float32)
        # Centring first keeps |x|² + |y|² - 2 x·y from cancelling away float32 digits.
        pooled -= pooled.mean(dim=0)
        squared_norms = (pooled * pooled).sum(dim=1)
        squared_distances = squared_norms[:, None] + squared_norms[None, :] - 2 * pooled @ pooled.T
        # Duplicate rows belong at distance 0, not at the rounding noise of |x|² + |y|² - 2 x·y.
        squared_distances.masked_fill_(
            squared_distances <= 1e-5 * (squared_norms[:, None] + squared_norms[None, :]), 0.0
        )

        bandwidth, bandwidth_note = self._bandwidth(squared_distances)
        # In place: at N rows every N x N matrix held at once costs 4 N² bytes more.
        kernel = squared_distances.div_(-2 * bandwidth**2).exp_()

        labels = torch.cat([torch.full((n,), 1.0 / n), torch.full((m,), -1.0 / m)])
        observed = _mmd2(labels[None, :].to(device), kernel).item()
        exceed = 0
        batch = max(1, BATCH_ELEMENTS // (n + m))
        for start in range(0, self.n_permutations, batch):
            size = min(batch, self.n_permutations - start)
            weights = torch.stack([labels[torch.randperm(n + m, generator=generator)] for _ in range(size)])
            permuted = _mmd2(weights.to(device), kernel)
            exceed += int((permuted >= observed).sum())
        p_value = (1 + exceed) / (1 + self.n_permutations)

        drift = p_value < self.alpha
        details.update(
            n_reference=n,
            n_current=m,
            bandwidth=bandwidth,
            n_permutations=self.n_permutations,
            device=str(device),
            dtype="float32",
        )
        if bandwidth_note:
            details["note"] = bandwidth_note
        verdict = "distributions differ" if drift else "no drift"
        return DriftResult(
            detector=self.name,
            drift=drift,
            statistic=observed,
            p_value=p_value,
            reason=f"{verdict}: MMD² {observed:.3g}, permutation p {p_value:.2g} ({n} vs {m} rows)",
            details=details,
        )

    def _device_name(self) -> str:
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device

    def _subsample(self, rows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.max_samples is None or len(rows) <= self.max_samples:
            return rows
        return rows[torch.randperm(len(rows), generator=generator)[: self.max_samples]]

    def _bandwidth(self, squared_distances: torch.Tensor) -> tuple[float, str]:
        if self.bandwidth != "median":
            return self.bandwidth, ""
        # The upper triangle holds each pair once; its median is the median over all pairs.
        size, device = len(squared_distances), squared_distances.device
        rows, columns = torch.triu_indices(size, size, offset=1, device=device)
        pairs = squared_distances[rows, columns]
        median = math.sqrt(pairs.median().item())
        if median > 0:
            return median, ""
        positive = pairs[pairs > 0]
        if len(positive):
            note = "median distance is 0; bandwidth from the non-zero distances"
            return math.sqrt(positive.median().item()), note
        return 1.0, "all pairwise distances are 0; bandwidth 1.0"


def _mmd2(weights: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Biased MMD² for each row of ±1/n, ±1/m weights: ``w K wᵀ`` = mean K(x, x') + mean K(y, y') -
    2 mean K(x, y)."""
    return ((weights @ kernel) * weights).sum(dim=1)

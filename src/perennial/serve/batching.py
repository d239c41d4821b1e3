"""Micro-batching: concurrent requests for the same model share one forward pass.

Requests queue while the inference thread is busy; when it frees up it takes everything waiting (up
to ``max_rows`` rows) as one batch. Nothing waits on a timer, so a lone request goes straight
through, and under load the batch grows with the queue: per-row framework overhead is paid once
per batch, and the event loop stays free to read and log requests while the model runs.

It pays where a forward pass is long next to the HTTP handling around it (a GPU, a large model). For
a small model on a CPU the hand-off to the inference thread costs more than it saves (measured in
docs/serve.md), so the server batches only on CUDA unless told otherwise.

>>> import asyncio
>>> class Doubler:
...     version = "v1"
...     def predict(self, x):
...         return x.sum(1) * 2, x
>>> async def three_requests():
...     batcher = MicroBatcher(max_rows=64)
...     rows = [np.full((1, 2), i, dtype=np.float32) for i in range(3)]
...     answers = await asyncio.gather(*(batcher.predict(Doubler(), x) for x in rows))
...     batcher.close()
...     return [a[0].tolist() for a in answers], batcher.batches
>>> asyncio.run(three_requests())  # all three arrive before the first forward pass: one batch
([[0.0], [4.0], [8.0]], 1)
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class Predictor(Protocol):
    version: str

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class _Waiting:
    model: Predictor
    x: np.ndarray
    answer: asyncio.Future


class MicroBatcher:
    """Runs ``model.predict`` for concurrent callers in batches, on one inference thread."""

    def __init__(self, max_rows: int = 256) -> None:
        if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
            raise ValueError(f"max_rows must be an integer >= 1, got {max_rows!r}")
        self.max_rows = max_rows
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._waiting: list[_Waiting] = []
        self._draining = False
        self.batches = 0  # forward passes run, for /metrics
        self.rows = 0

    async def predict(self, model: Predictor, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``model.predict(x)``, batched with whatever other requests are waiting."""
        answer = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(model, x, answer))
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return await answer

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiting:
                batch = self._take()
                try:
                    results = await loop.run_in_executor(self._executor, _forward, batch)
                except Exception as err:  # every caller of the batch hears of it; the others go on
                    for item in batch:
                        if not item.answer.done():
                            item.answer.set_exception(err)
                    continue
                self.batches += 1
                self.rows += sum(len(item.x) for item in batch)
                for item, result in zip(batch, results, strict=True):
                    if not item.answer.done():  # its client may have gone away
                        item.answer.set_result(result)
        finally:
            self._draining = False

    def _take(self) -> list[_Waiting]:
        """The oldest waiting requests, up to ``max_rows`` rows (at least one request)."""
        rows, n = 0, 0
        while n < len(self._waiting) and (n == 0 or rows + len(self._waiting[n].x) <= self.max_rows):
            rows += len(self._waiting[n].x)
            n += 1
        batch, self._waiting = self._waiting[:n], self._waiting[n:]
        return batch

    def close(self) -> None:
        self._executor.shutdown(wait=True)


def _forward(batch: list[_Waiting]) -> list[tuple[np.ndarray, np.ndarray]]:
    """One forward pass per model in the batch; each request gets its own rows back."""
    out: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(batch)
    by_model: dict[int, list[int]] = {}
    for i, item in enumerate(batch):
        by_model.setdefault(id(item.model), []).append(i)
    for members in by_model.values():
        model = batch[members[0]].model
        predictions, probabilities = model.predict(np.concatenate([batch[i].x for i in members]))
        cuts = np.cumsum([len(batch[i].x) for i in members])[:-1]
        for i, p, q in zip(
            members, np.split(predictions, cuts), np.split(probabilities, cuts), strict=True
        ):
            out[i] = (p, q)
    return out  # type: ignore[return-value]

"""A growing head against a full one on class-incremental digits: forgetting and final accuracy of
each anti-forgetting strategy with ``loop.head=grow`` (outputs for the classes seen so far, widened as
new ones arrive) and ``loop.head=full`` (an output for every class from v1). The figures of
docs/design.md, "Schema change and model iteration", and of docs/benchmarks.md.

    .venv/bin/python scripts/bench_heads.py          # about 2 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import torch

from bench_update import command, load_average, machine, replace_section
from perennial.cli.common import build_module
from perennial.data import DigitsStream
from perennial.evaluate import PromotionGate
from perennial.learn import DER, EWC, MLP, LwF, ReservoirBuffer, StatefulUpdate
from perennial.loop import ContinuousDeployment, LoopSettings
from perennial.registry import Registry
from perennial.report.run import summarize
from perennial.triggers import EveryWindow

STRATEGIES = {  # name: (replay buffer rows, regularisers)
    "naive": (0, lambda: []),
    "replay": (300, lambda: []),
    "ewc": (0, lambda: [EWC(lam=1000.0)]),
    "lwf": (0, lambda: [LwF(alpha=10.0)]),
    "derpp": (300, lambda: [DER(alpha=0.3)]),
}


def run(root: Path, strategy: str, head: str) -> tuple[float, float]:
    """Forgetting of the final champion, and the last version's mean accuracy over all windows."""
    stream = DigitsStream(scenario="class_incremental")
    rows, regularizers = STRATEGIES[strategy]
    loop = ContinuousDeployment(
        stream=stream,
        build=partial(
            build_module, partial(MLP, hidden=(32,)), tuple(stream.feature_shape), stream.n_classes
        ),
        update=StatefulUpdate(epochs=8, replay_fraction=0.5 if rows else 0.0),
        trigger=EveryWindow(),
        gate=PromotionGate(tolerance=1.0, forgetting_tolerance=1.0),  # compare strategies, not the gate
        buffer=ReservoirBuffer(rows) if rows else None,
        registry=Registry(root / f"{strategy}-{head}" / "registry"),
        run_dir=root / f"{strategy}-{head}",
        settings=LoopSettings(warmup_windows=1, initial_epochs=10, head=head),
        progress=False,
        regularizers=regularizers(),
    )
    state = loop.run()
    matrix = loop.accuracy_matrix()
    forgetting = summarize(state, loop.registry, matrix, stream)["forgetting"]
    loop.registry.close()
    return forgetting, float(matrix.iloc[-1].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    load, start = os.getloadavg()[0], time.perf_counter()
    lines = [
        "| strategy | `head=full`: forgetting / accuracy | `head=grow`: forgetting / accuracy |",
        "|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in STRATEGIES:
            cells = []
            for head in ("full", "grow"):
                forgetting, accuracy = run(Path(tmp), strategy, head)
                cells.append(f"{forgetting:.3f} / {accuracy:.3f}")
                print(
                    f"{strategy:7s} head={head:4s} forgetting {forgetting:.3f}, accuracy {accuracy:.3f}",
                    flush=True,
                )
            lines.append(f"| {strategy} | {' | '.join(cells)} |")
    body = f"""## Growing heads on class-incremental digits (scripts/bench_heads.py)

Command: `{command()}` (run time after imports: {(time.perf_counter() - start) / 60:.1f} min)
Date: {datetime.now(UTC).date().isoformat()}. Machine: {machine()}; {load_average(load)}.

scikit-learn digits, 5 windows of 2 new digits each; MLP hidden [32], warm-up 1 window (10 epochs),
then a stateful update every window (8 epochs; replay 300 rows, as many replayed as new); a gate
that always promotes, so the strategies are compared, not the gate. Forgetting of the final
champion (`perennial.evaluate.forgetting`) / mean accuracy of the last version over every window's
held-out rows.

{chr(10).join(lines)}

With a full head, training on the first digits also pushes the outputs of the later ones down, and
EWC anchors them there; with a growing head nothing held the new outputs down, and EWC and LwF forget
about as much as naive fine-tuning. Replay is what keeps the old digits (docs/design.md).
"""
    replace_section(args.out, "heads", body)
    print(f"wrote the section to {args.out}")


if __name__ == "__main__":
    main()

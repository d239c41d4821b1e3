"""`perennial-recommend`, run as a user would: a ratings file in, a servable registry out."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from perennial.recommend import Recommender
from perennial.registry import Registry


def perennial_recommend(*overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "perennial.cli.recommend", "progress=false", *overrides],
        cwd=cwd,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def ratings_csv(path: Path, n: int = 3000) -> Path:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "userId": rng.integers(1, 80, n),
            "movieId": rng.integers(1, 120, n),
            "rating": rng.choice([1.0, 2.5, 4.0, 5.0], n),
            "timestamp": np.sort(rng.integers(1_500_000_000, 1_600_000_000, n)),
        }
    ).drop_duplicates(["userId", "movieId"])
    frame.to_csv(path, index=False)
    return path


def test_the_job_writes_a_registry_the_recommender_server_can_load(tmp_path):
    path = ratings_csv(tmp_path / "ratings.csv")
    out = tmp_path / "run"
    args = [f"ratings.path={path}", "ratings.n_windows=3", "recommender.dim=4", "recommender.epochs=1"]
    done = perennial_recommend(*args, f"hydra.run.dir={out}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "serve.mode=recommender" in done.stdout
    updates = pd.read_csv(out / "updates.csv")
    assert updates["version"].tolist() == ["v1", "v1.1", "v1.2"]
    with Registry(out / "registry", create=False) as registry:
        champion = registry.champion()
        model = Recommender.from_state_dict(champion, registry.load_weights(champion))
    assert len(model.items) > 0 and model.factors.shape[1] == 5  # dim 4 and the user-bias column
    again = perennial_recommend(*args, f"hydra.run.dir={out}", cwd=tmp_path)
    assert again.returncode == 2 and "already holds versions" in again.stderr


def test_a_missing_ratings_file_is_named(tmp_path):
    done = perennial_recommend(
        f"ratings.path={tmp_path / 'nope.csv'}", f"hydra.run.dir={tmp_path}", cwd=tmp_path
    )
    assert done.returncode == 2 and "nope.csv: file not found" in done.stderr
    assert "Traceback" not in done.stderr

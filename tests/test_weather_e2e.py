"""The default job on the full 50-year weather stream (slow: run with `make test-slow`)."""

from __future__ import annotations

import json

import pytest

from tests.test_cli_run import perennial_run


@pytest.mark.slow
def test_default_weather_job_keeps_the_model_fresh(tmp_path):
    done = perennial_run(f"hydra.run.dir={tmp_path / 'run'}", "progress=false", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["windows"] == 50 and summary["evaluated_windows"] == 47
    ids = [v["id"] for v in summary["versions"]]
    assert ids[:3] == ["v1", "v1.1", "v1.2"]
    # the aim: over the last 10 years the updated model beats the never-updated one by 15 points
    recent = summary["recent"]
    assert recent["served_accuracy"] >= recent["static_accuracy"] + 0.15

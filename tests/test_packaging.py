"""perennial as a user installs it: a wheel built from this checkout, installed in a fresh virtual
environment without the source tree, runs a job and reads its registry from any directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# What the wheel is built from; tests, scripts and docs are not part of it.
SOURCES = ("pyproject.toml", "README.md", "src", "conf")
FAST = ["update.epochs=2", "loop.initial_epochs=3", "loop.warmup_windows=1", "progress=false"]


def run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    # No PYTHONPATH: nothing may reach the checkout but through the installed wheel.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def checked(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel of this checkout, built in a copy so that build/ and *.egg-info stay out of it."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    source.mkdir()
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=skip)
        else:
            shutil.copy2(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    checked(run(*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp / "dist", source, cwd=tmp))
    (built,) = (tmp / "dist").glob("perennial-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory) -> Path:
    """The bin/ of a fresh virtual environment holding the wheel and nothing else of this checkout.

    Its dependencies (torch alone is gigabytes) come from the test's own environment through a .pth
    line. Python does not read the .pth files of a directory added that way, so the editable install
    living there (its import hook is started by a .pth file) cannot serve perennial in place of the
    wheel."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    # The wheel goes in before the dependencies are visible, so pip sees no perennial to replace.
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", "--python", python]
    checked(run(*pip, "install", "--no-deps", wheel, cwd=env_dir))
    site = checked(run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=env_dir))
    Path(site.strip(), "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return env_dir / "bin"


def test_the_wheel_holds_every_module_and_every_config(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(REPO / "src").as_posix() for p in (REPO / "src").rglob("*.py")}
    conf = REPO / "conf"
    configs = {f"perennial/conf/{p.relative_to(conf).as_posix()}" for p in conf.rglob("*")}
    configs = {c for c in configs if c.endswith((".yaml", ".py"))}
    assert any(c.endswith("trigger/detector/mmd.yaml") for c in configs)  # nested groups are counted
    assert modules - names == set(), "add the missing packages to [tool.setuptools] packages"
    assert configs - names == set(), "add the missing configs to [tool.setuptools.package-data]"


def test_an_installed_wheel_runs_a_job_from_any_directory(installed: Path, tmp_path: Path):
    # perennial and its configs, not the checkout's (perennial.cli would import torch: seconds).
    code = "import perennial, perennial.conf; print(perennial.__file__); print(perennial.conf.__file__)"
    where = checked(run(installed / "python", "-c", code, cwd=tmp_path)).split()
    venv_dir = installed.parent
    assert all(Path(p).is_relative_to(venv_dir) for p in where), where  # the wheel, not the checkout

    out = checked(
        run(
            installed / "perennial-run",
            "data=synthetic",
            "data.n_samples=2000",
            "data.window=500",
            *FAST,
            cwd=tmp_path,
        )
    )
    assert "served accuracy" in out
    (run_dir,) = (tmp_path / "runs" / "synthetic-stateful").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["windows"] == 4
    assert [v["id"] for v in summary["versions"]][:2] == ["v1", "v1.1"]

    lineage = checked(run(installed / "perennial-registry", run_dir / "registry", "list", cwd=tmp_path))
    assert "v1" in lineage and "v1.1" in lineage

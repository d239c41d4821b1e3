"""`perennial-run`: the continuous-deployment job, a Hydra app configured from conf/run.yaml."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import hydra
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from perennial.cli.common import CONF_DIR, CONFIG_PATH, challenger, stream_and_builder, user_errors
from perennial.loop import ContinuousDeployment, LoopSettings
from perennial.registry import Registry
from perennial.report.run import print_summary, summarize, write_outputs

# CONF_DIR is for code that composes run.yaml as perennial-run does (tests, notebooks): importing it
# from here also registers the resolvers that run.yaml's hydra section interpolates.
__all__ = ["CONF_DIR", "main"]


def resuming(resume: object) -> bool:
    """``resume`` as given on the command line: false or null starts afresh, true or a path continues."""
    return resume not in (False, None, "false", "False")


def run_dir(base: str, stamp: str, resume: object) -> str:
    """A new ``base/<time>`` directory, or with ``resume`` the run to continue.

    ``resume=true`` picks the newest run under ``base`` that has a registry; a path picks that run.
    """
    return _new_or_continued(base, stamp, resume, "run", "registry/index.sqlite")


def sweep_dir(base: str, stamp: str, resume: object) -> str:
    """``hydra.sweep.dir`` of a multirun: a new ``base/<time>``, or with ``resume`` the sweep to continue.

    ``resume=true`` picks the newest sweep under ``base``; a path picks that sweep.
    """
    return _new_or_continued(base, stamp, resume, "sweep", "multirun.yaml")


def _new_or_continued(base: str, stamp: str, resume: object, what: str, marker: str) -> str:
    if not resuming(resume):
        return f"{base}/{stamp}"
    if resume not in (True, "true", "True"):
        return str(resume)
    found = sorted(p for p in Path(base).glob("*") if (p / marker).exists())
    if not found:
        raise FileNotFoundError(
            f"resume=true, but no {what} to resume under {base}/; start one without resume"
        )
    return str(found[-1])


OmegaConf.register_new_resolver("perennial_run_dir", run_dir, use_cache=True, replace=True)
OmegaConf.register_new_resolver("perennial_sweep_dir", sweep_dir, use_cache=True, replace=True)


RUN_MODE_KEYS = ("follow", "poll")  # loop settings of how a run is driven, not of what it does


def poll_seconds(value: object) -> float:
    """``loop.poll`` as seconds: a number, or a duration such as "30s", "5min", "1h"."""
    try:
        seconds = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
        if seconds is None:
            seconds = pd.Timedelta(str(value)).total_seconds()
    except ValueError:
        seconds = None
    if seconds is None or not seconds > 0:
        raise ValueError(f"loop.poll must be a positive duration such as '30s' or '5min', got {value!r}")
    return seconds


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM (a scheduler ending the job) and SIGINT set ``stop``: the loop finishes committing the
    window in hand and returns, so the job exits 0 and the next run continues after that window."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread (a test's worker thread)
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handle(signum: int, frame: object) -> None:
        print(
            f"perennial-run: {signal.Signals(signum).name}: stopping after the current window",
            file=sys.stderr,
        )
        stop.set()

    for sig in previous:
        signal.signal(sig, handle)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(cfg: DictConfig) -> dict:
    """Build every part from the config, run the loop, write the outputs; returns the summary."""
    out = Path(HydraConfig.get().runtime.output_dir)
    # First: a logger that cannot work (a missing package, an unreachable server) stops the job
    # before any data is read or model trained.
    logger = instantiate(cfg.logger) if cfg.get("logger") else None
    stream, build = stream_and_builder(cfg)
    rival = challenger(cfg, stream)  # before the config is stored: it names the preset's architecture
    registry = Registry(cfg.registry_dir or out / "registry")
    config = OmegaConf.to_container(cfg, resolve=True)
    # May differ between a run and its resumption: a run can be resumed with another logger, which
    # catches up from the registry.
    for key in ("resume", "progress", "logger"):
        config.pop(key, None)
    loop_settings = {k: v for k, v in config["loop"].items() if k not in RUN_MODE_KEYS}
    config["loop"] = loop_settings  # a run may be continued in follow mode, or polled less often
    follow = bool(cfg.loop.get("follow", False))
    poll = poll_seconds(cfg.loop.get("poll", "30s"))
    loop = ContinuousDeployment(
        stream=stream,
        build=build,
        update=instantiate(cfg["update"]),
        trigger=instantiate(cfg.trigger),
        gate=instantiate(cfg.gate),
        buffer=instantiate(cfg.strategy.buffer) if cfg.strategy.buffer is not None else None,
        registry=registry,
        run_dir=out,
        settings=LoopSettings(seed=cfg.seed, **loop_settings),
        trainer=OmegaConf.to_container(cfg.trainer, resolve=True),
        config=config,
        progress=cfg.progress,
        regularizers=[instantiate(r) for r in cfg.strategy.get("regularizers") or []],
        rollout=instantiate(cfg.rollout) if cfg.rollout.get("_target_") else None,
        screen=instantiate(cfg.screen) if cfg.screen.get("_target_") else None,
        logger=logger,
        challenger=rival,
    )
    # A job of a multirun continues the run its directory holds, if any: the sweeper has already
    # refused such a directory unless the sweep was resumed, and a job that SLURM requeues after a
    # preemption or its time limit must go on from its last saved window.
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN

    def outputs(result: dict) -> dict:
        matrix = loop.accuracy_matrix()
        summary = summarize(result, registry, matrix, stream, recent=cfg.recent_windows)
        write_outputs(out, summary, result, matrix, stream)
        return summary

    try:
        with stop_on_signals(loop.stop):
            if follow:
                result = loop.follow(poll, on_commit=outputs)
            else:
                result = loop.run(resume=resuming(cfg.resume) or multirun)
        if not result["started"]:
            print(
                f"perennial-run: waiting for data: {result['windows']} complete window(s) in "
                f"{stream.name!r}, v1 needs loop.warmup_windows={cfg.loop.warmup_windows}; no model "
                f"trained and nothing committed: run again when more has landed",
                file=sys.stderr,
            )
            return {}
        summary = outputs(result)
    finally:
        # Closed now, not whenever it is collected: the next job of a sweep runs in this same process,
        # and a finished job's directory is left as it is.
        registry.close()
    print_summary(summary, out)
    return summary


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="run")
def main(cfg: DictConfig) -> None:
    with user_errors("perennial-run"):
        run(cfg)


if __name__ == "__main__":
    main()

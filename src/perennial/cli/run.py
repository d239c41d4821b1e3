"""`perennial-run`: the continuous-deployment job, a Hydra app configured from conf/run.yaml."""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from perennial.cli.common import CONF_DIR, stream_and_builder, user_errors
from perennial.loop import ContinuousDeployment, LoopSettings
from perennial.registry import Registry
from perennial.report import print_summary, summarize, write_outputs


def run_dir(base: str, stamp: str, resume: object) -> str:
    """A new ``base/<time>`` directory, or with ``resume`` the run to continue.

    ``resume=true`` picks the newest run under ``base`` that has a registry; a path picks that run.
    """
    if resume in (False, None, "false", "False"):
        return f"{base}/{stamp}"
    if resume not in (True, "true", "True"):
        return str(resume)
    runs = sorted(p for p in Path(base).glob("*") if (p / "registry" / "index.sqlite").exists())
    if not runs:
        raise FileNotFoundError(f"resume=true, but no run to resume under {base}/; start one without resume")
    return str(runs[-1])


OmegaConf.register_new_resolver("perennial_run_dir", run_dir, use_cache=True, replace=True)


def run(cfg: DictConfig) -> dict:
    """Build every part from the config, run the loop, write the outputs; returns the summary."""
    out = Path(HydraConfig.get().runtime.output_dir)
    stream, build = stream_and_builder(cfg)
    registry = Registry(cfg.registry_dir or out / "registry")
    config = OmegaConf.to_container(cfg, resolve=True)
    for key in ("resume", "progress"):  # may differ between a run and its resumption
        config.pop(key, None)
    loop = ContinuousDeployment(
        stream=stream,
        build=build,
        update=instantiate(cfg["update"]),
        trigger=instantiate(cfg.trigger),
        gate=instantiate(cfg.gate),
        buffer=instantiate(cfg.strategy.buffer) if cfg.strategy.buffer is not None else None,
        registry=registry,
        run_dir=out,
        settings=LoopSettings(seed=cfg.seed, **cfg.loop),
        trainer=OmegaConf.to_container(cfg.trainer, resolve=True),
        config=config,
        progress=cfg.progress,
        regularizers=[instantiate(r) for r in cfg.strategy.get("regularizers") or []],
        rollout=instantiate(cfg.rollout) if cfg.rollout.get("_target_") else None,
    )
    state = loop.run(resume=bool(cfg.resume))
    matrix = loop.accuracy_matrix()
    summary = summarize(state, registry, matrix, stream, recent=cfg.recent_windows)
    write_outputs(out, summary, state, matrix, stream)
    print_summary(summary, out)
    return summary


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="run")
def main(cfg: DictConfig) -> None:
    with user_errors("perennial-run"):
        run(cfg)


if __name__ == "__main__":
    main()

"""`perennial-freshness`: how often to retrain, measured on a stream's history; a Hydra app
configured from conf/freshness.yaml (docs/freshness.md)."""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from perennial.cli.common import CONFIG_PATH, stream_and_builder, user_errors
from perennial.evaluate.freshness import (
    FreshnessResult,
    FreshnessSettings,
    FreshnessStudy,
    print_result,
    write_outputs,
)


def freshness(cfg: DictConfig) -> FreshnessResult:
    """Check the settings, build the stream and model, run the study, write and print the results."""
    out = Path(HydraConfig.get().runtime.output_dir)
    settings = FreshnessSettings(**OmegaConf.to_container(cfg.freshness, resolve=True))
    stream, build = stream_and_builder(cfg)
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    result = FreshnessStudy(stream, build, settings, seed=cfg.seed, trainer=trainer).run(
        progress=cfg.progress
    )
    write_outputs(result, out)
    print_result(result, out)
    return result


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="freshness")
def main(cfg: DictConfig) -> None:
    with user_errors("perennial-freshness"):
        freshness(cfg)


if __name__ == "__main__":
    main()

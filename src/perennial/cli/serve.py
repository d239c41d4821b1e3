"""`perennial-serve`: serve a registry over HTTP (FastAPI + uvicorn), a Hydra app configured from
conf/serve.yaml. ``serve.analyze=true`` prints the statistics recomputed from the request log instead."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from perennial.cli.common import CONFIG_PATH, stream_and_builder, user_errors

SCALARS = {"int": int, "float": float, "str": str}


def settings(cfg: DictConfig):
    """The server's settings from the config: every ``ServeSettings`` field is read from ``serve.<name>``
    (a field the config lacks keeps its default). The other ``serve`` keys (host, port, threads,
    log_level, analyze) are this app's.

    The fallback rebuilds versions stored without a pipeline (registries written before versions
    carried one) as servers did then: from the data and model groups stored with the version, which
    reads its training data, or from this config's data=/model= for a version stored without them.
    The server checks the stored groups against its allow-list before calling it."""
    from perennial.serve.app import ServeSettings

    s = cfg.serve
    if not s.registry:
        raise ValueError("serve.registry=PATH is required: the registry directory to serve from")

    def fallback(stored: Mapping[str, Any]):
        groups = {name: stored.get(name) for name in ("data", "model")}
        if all(isinstance(g, Mapping) and "_target_" in g for g in groups.values()):
            stream, build = stream_and_builder(OmegaConf.create(groups))
        else:
            stream, build = stream_and_builder(cfg)
        return build, tuple(stream.feature_shape)

    values = {}
    for field in fields(ServeSettings):
        if field.name in ("registry", "fallback") or field.name not in s:
            continue
        value = s[field.name]
        kind = SCALARS.get(getattr(field.type, "__name__", field.type))  # a type, or its name as a string
        if kind is not None and value is not None:
            try:
                value = kind(value)
            except (TypeError, ValueError):
                raise ValueError(f"serve.{field.name} must be {kind.__name__}, got {value!r}") from None
        values[field.name] = value
    return ServeSettings(registry=Path(s.registry), fallback=fallback, **values)


def serve(cfg: DictConfig) -> None:
    import torch
    import uvicorn

    from perennial.serve.app import create_app
    from perennial.serve.log import analyze

    config = settings(cfg)
    if cfg.serve.analyze:
        log = Path(config.log or config.registry / "serve-log.sqlite")
        if not log.is_file():
            raise FileNotFoundError(f"no request log at {log}")
        print(json.dumps(analyze(log, cfg.serve.registry), indent=2))
        return
    torch.set_num_threads(int(cfg.serve.threads))
    app = create_app(config)
    uvicorn.run(
        app, host=cfg.serve.host, port=int(cfg.serve.port), log_level=cfg.serve.log_level, access_log=False
    )


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="serve")
def main(cfg: DictConfig) -> None:
    with user_errors("perennial-serve"):
        serve(cfg)


if __name__ == "__main__":
    main()

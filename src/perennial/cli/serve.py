"""`perennial-serve`: serve a registry over HTTP (FastAPI + uvicorn), a Hydra app configured from
conf/serve.yaml. ``serve.analyze=true`` prints the statistics recomputed from the request log instead."""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

from perennial.cli.common import CONF_DIR, stream_and_builder, user_errors


def settings(cfg: DictConfig):
    """The server's settings from the config; the data/model groups rebuild versions stored without them."""
    from perennial.serve.app import ServeSettings

    s = cfg.serve
    if not s.registry:
        raise ValueError("serve.registry=PATH is required: the registry directory to serve from")

    def fallback():
        stream, build = stream_and_builder(cfg)
        return build, tuple(stream.feature_shape)

    return ServeSettings(
        registry=Path(s.registry),
        log=s.log,
        token=s.token,
        max_body_bytes=int(s.max_body_bytes),
        max_rows=int(s.max_rows),
        max_batch_rows=int(s.max_batch_rows),
        device=str(s.device),
        batching=str(s.batching),
        log_queue=int(s.log_queue),
        log_synchronous=str(s.log_synchronous),
        shadow_queue=int(s.shadow_queue),
        fallback=fallback,
        mode=str(s.mode),
        max_sessions=int(s.max_sessions),
        session_ttl_s=float(s.session_ttl_s),
        session_interactions=int(s.session_interactions),
        feedback_rate=float(s.feedback_rate),
        feedback_burst=float(s.feedback_burst),
        click_rating=float(s.click_rating),
    )


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
        print(json.dumps(analyze(log), indent=2))
        return
    torch.set_num_threads(int(cfg.serve.threads))
    app = create_app(config)
    uvicorn.run(
        app, host=cfg.serve.host, port=int(cfg.serve.port), log_level=cfg.serve.log_level, access_log=False
    )


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="serve")
def main(cfg: DictConfig) -> None:
    with user_errors("perennial-serve"):
        serve(cfg)


if __name__ == "__main__":
    main()

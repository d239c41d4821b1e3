"""perennial-run's Hydra sweeper: `hydra/sweeper=perennial`, the default in conf/run.yaml."""

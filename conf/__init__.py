"""perennial's Hydra configs, installed as the package ``perennial.conf`` (pyproject.toml maps it to
this directory) so that every entry point finds them as ``pkg://perennial.conf`` from any install."""

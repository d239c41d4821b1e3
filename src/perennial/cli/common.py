"""What perennial's Hydra apps share: the packaged configs, building the stream and the model from
a config, and turning bad input into a one-line error with exit status 2."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from importlib.resources import files
from pathlib import Path

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

# build_for is perennial.api's (perennial.model_builder's), and still importable from here.
from perennial.api import build_for
from perennial.data.window import DataError, Stream
from perennial.learn.module import ClassifierModule
from perennial.loop import Challenger

USER_ERRORS = (DataError, ValueError, FileNotFoundError, RuntimeError)
# The configs ship inside the package (pyproject.toml maps perennial.conf to the top-level conf/), so
# the apps find them from a wheel as from a checkout, whatever the working directory.
CONF_PACKAGE = "perennial.conf"
CONFIG_PATH = f"pkg://{CONF_PACKAGE}"  # hydra.main's config_path
# The same configs as a directory, for reading presets and for hydra's initialize_config_dir: an
# installed package is unpacked on disk (pip never installs a zipped wheel).
CONF_DIR = str(files(CONF_PACKAGE))


def stream_and_builder(cfg: DictConfig) -> tuple[Stream, Callable[[], ClassifierModule]]:
    """The stream of ``cfg.data`` and a function that builds a fresh, untrained ``cfg.model`` for it."""
    stream = instantiate(cfg.data)
    return stream, partial(build_for, instantiate(cfg.model), stream)


def challenger(cfg: DictConfig, stream: Stream) -> Challenger | None:
    """The challenger line of ``cfg.challenger`` for ``stream``, or None without one.

    ``challenger.model`` names a preset of conf/model; it is replaced in ``cfg`` by the preset's
    config, so that the run's stored config says which architecture each line is."""
    spec = cfg.get("challenger") or {}
    name = spec.get("model")
    if name is None:
        return None
    if isinstance(name, str):
        presets = sorted(p.stem for p in (Path(CONF_DIR) / "model").glob("*.yaml"))
        if name not in presets:
            raise ValueError(
                f"challenger.model={name!r} is not a preset of conf/model; choose from {presets}"
            )
        with open_dict(cfg):
            cfg.challenger.model = OmegaConf.load(Path(CONF_DIR) / "model" / f"{name}.yaml")
    model = instantiate(cfg.challenger.model)
    build = partial(build_for, model, stream)
    label = name if isinstance(name, str) else "challenger"
    return Challenger(build, name=label, every=spec.get("every", 1))


@contextmanager
def user_errors(prog: str) -> Iterator[None]:
    """Bad input is the user's to fix: print ``prog: error: <what is wrong>`` without a stack trace
    and exit with status 2. Anything else is a bug and keeps its traceback."""
    try:
        yield
    except USER_ERRORS as err:
        _exit(prog, err)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, USER_ERRORS):  # a bad value in a config group, e.g. data.time_column
            _exit(prog, cause)
        raise


def _exit(prog: str, err: BaseException) -> None:
    print(f"{prog}: error: {err}", file=sys.stderr)
    sys.exit(2)

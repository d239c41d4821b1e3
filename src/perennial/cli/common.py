"""What perennial's Hydra apps share: the config directory, building the stream and the model from
a config, and turning bad input into a one-line error with exit status 2."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from perennial.data.window import DataError, Stream
from perennial.learn.module import ClassifierModule

USER_ERRORS = (DataError, ValueError, FileNotFoundError, RuntimeError)
CONF_DIR = str(Path(__file__).resolve().parents[3] / "conf")


def build_module(backbone_factory, in_shape: tuple[int, ...], n_classes: int) -> ClassifierModule:
    return ClassifierModule(backbone_factory(in_shape=in_shape, n_classes=n_classes), n_classes)


def stream_and_builder(cfg: DictConfig) -> tuple[Stream, Callable[[], ClassifierModule]]:
    """The stream of ``cfg.data`` and a function that builds a fresh, untrained ``cfg.model`` for it."""
    stream = instantiate(cfg.data)
    build = partial(build_module, instantiate(cfg.model), tuple(stream.feature_shape), stream.n_classes)
    return stream, build


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

"""Every conf/data/*.yaml builds its stream, so a broken config fails here and not in a user's job."""

from pathlib import Path

import pandas as pd
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue

from perennial.cli.common import CONF_DIR
from perennial.data import DigitsStream, Stream, SyntheticStream, TableStream, WeatherStream

from .test_images import needs_fashion

CONF = Path(CONF_DIR) / "data"  # the configs as installed, which the apps read


@pytest.mark.parametrize(
    ("name", "cls"), [("weather", WeatherStream), ("synthetic", SyntheticStream), ("digits", DigitsStream)]
)
def test_config_builds_its_stream(name: str, cls: type):
    stream = instantiate(OmegaConf.load(CONF / f"{name}.yaml"))
    assert isinstance(stream, cls) and len(stream.windows()) > 1


@needs_fashion
def test_fashion_mnist_config_builds():
    config = OmegaConf.load(CONF / "fashion_mnist.yaml")
    stream = instantiate(config, max_per_window=50)
    assert isinstance(stream, Stream) and len(stream) == 5


def test_table_config_needs_the_file_and_columns(tmp_path: Path):
    config = OmegaConf.load(CONF / "table.yaml")
    with pytest.raises(MissingMandatoryValue):
        instantiate(config)
    path = tmp_path / "events.csv"
    days = pd.date_range("2024-01-01", periods=30, freq="D")
    pd.DataFrame({"day": days, "size": range(30), "ok": [i % 2 for i in range(30)]}).to_csv(path, index=False)
    stream = instantiate(config, path=str(path), time_column="day", target="ok")
    assert isinstance(stream, TableStream) and [len(w) for w in stream] == [7, 7, 7, 7, 2]

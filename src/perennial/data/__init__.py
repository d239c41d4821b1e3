"""Streams of time windows: the real and synthetic data perennial deploys on, and users' own tables."""

from perennial.data.images import DigitsStream, FashionMNISTStream
from perennial.data.rare import RareClassStream
from perennial.data.schema import NewColumnsStream
from perennial.data.synthetic import SyntheticStream
from perennial.data.table import TableStream
from perennial.data.weather import WeatherStream
from perennial.data.window import DataError, DataIssue, Stream, Window

__all__ = [
    "DataError",
    "DataIssue",
    "DigitsStream",
    "FashionMNISTStream",
    "NewColumnsStream",
    "RareClassStream",
    "Stream",
    "SyntheticStream",
    "TableStream",
    "WeatherStream",
    "Window",
]

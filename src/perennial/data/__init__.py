"""Streams of time windows: the real and synthetic data perennial deploys on, and users' own tables."""

from perennial.data.images import DigitsStream, FashionMNISTStream
from perennial.data.partitions import PartitionedTable, open_table
from perennial.data.rare import RareClassStream
from perennial.data.schema import NewColumnsStream
from perennial.data.serve_log import ServeLogStream
from perennial.data.synthetic import SyntheticStream
from perennial.data.table import TableStream
from perennial.data.weather import WeatherStream
from perennial.data.window import DataError, DataIssue, Stream, Window, WindowFeed

__all__ = [
    "DataError",
    "DataIssue",
    "DigitsStream",
    "FashionMNISTStream",
    "NewColumnsStream",
    "PartitionedTable",
    "RareClassStream",
    "ServeLogStream",
    "Stream",
    "SyntheticStream",
    "TableStream",
    "WeatherStream",
    "Window",
    "WindowFeed",
    "open_table",
]

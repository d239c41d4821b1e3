"""Experiment loggers for a run: what the loop does, window by window, to a CSV file, TensorBoard or
MLflow (``logger=csv|tensorboard|mlflow|none``), so a long run can be watched as it goes.

- ``RunLogger``: the calls the loop makes, and ``logger=none`` (it logs nothing);
- ``CSVLogger``: ``metrics.csv`` and ``events.csv`` in the run directory (the default);
- ``TensorBoardLogger``: event files in ``<run dir>/tensorboard/``;
- ``MLflowLogger``: an MLflow run, and every version in MLflow's model registry.
"""

from perennial.tracking.base import Decision, RunHistory, RunLogger
from perennial.tracking.csv import CSVLogger
from perennial.tracking.mlflow import MLflowLogger
from perennial.tracking.tensorboard import TensorBoardLogger

__all__ = ["CSVLogger", "Decision", "MLflowLogger", "RunHistory", "RunLogger", "TensorBoardLogger"]

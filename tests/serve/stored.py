"""Versions stored as the training loop stores them, for the server's tests to build registries from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf

from perennial.cli.common import stream_and_builder
from perennial.data.pipeline import InputPipeline
from perennial.learn import ClassifierModule
from perennial.registry import Registry, VersionRecord

from ..data.test_table import sales, write_csv

MODEL = {"_target_": "perennial.learn.MLP", "_partial_": True, "hidden": [8]}


def pipeline_extra(stream) -> dict[str, dict]:
    """The extra the loop stores with every version so that a server needs nothing but the registry:
    the stream's input pipeline (shape, classes, the table's fitted encoding)."""
    return {"pipeline": InputPipeline.of_stream(stream).to_dict()}


def table_registry(tmp_path: Path, pipeline: bool = True) -> tuple[Path, Path, object, ClassifierModule]:
    """A registry whose champion v1 reads a table of a text column (store) and two numeric ones (price,
    qty), its stored config's data group naming the CSV; ``pipeline=False`` stores it as the loop did
    before versions carried their pipeline. Returns the registry, the CSV, the stream and v1's module."""
    csv = write_csv(sales(), tmp_path)
    data = {
        "_target_": "perennial.data.TableStream",
        "path": str(csv),
        "time_column": "when",
        "target": "label",
    }
    config = {"data": data, "model": MODEL}
    stream, build = stream_and_builder(OmegaConf.create(config))
    torch.manual_seed(0)
    module = build().eval()
    extras = {"preprocessing": stream.preprocessing, **(pipeline_extra(stream) if pipeline else {})}
    root = tmp_path / "registry"
    with Registry(root) as reg:
        reg.add(VersionRecord("v1", None, "stateless", config=config), module.state_dict(), extras)
        reg.promote("v1", reason="test")
    return root, csv, stream, module


def raw_rows(csv: Path, stream) -> list[dict]:
    """The file's rows in the stream's order (each window's, one after the other), as a client sends
    them: JSON objects of the raw feature columns."""
    frame = pd.read_csv(csv)
    order = np.argsort(pd.to_datetime(frame[stream.time_column]).to_numpy(), kind="stable")
    return json.loads(frame.iloc[order][stream.encoding.raw_columns].to_json(orient="records"))

"""Clients send raw named rows (``{"store": "north", "price": 9.5, "qty": 3}``) and the server encodes
them with the version's stored pipeline, as the training rows were: the same answers as the module on
the loop's encoded rows, and a bad row refused with a 422 that names the row and the column."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from omegaconf import OmegaConf

from perennial.cli.common import stream_and_builder
from perennial.data import TableStream
from perennial.data.encoding import CategoricalColumn, NumericColumn, TableEncoding
from perennial.data.pipeline import InputPipeline
from perennial.registry import Registry, VersionRecord
from perennial.serve import ServeSettings, create_app
from perennial.serve.app import ModelServer, ServeError
from perennial.serve.edge import BodyLimits

from ..data.test_table import sales, write_csv
from ..test_cli_run import FAST, perennial_run, unprepared_csv
from .stored import pipeline_extra, raw_rows, table_registry


@pytest.fixture
def table(tmp_path):
    return table_registry(tmp_path)


@pytest.fixture
def client(table, tmp_path):
    root = table[0]
    with TestClient(create_app(ServeSettings(registry=root, token="t", follow=False))) as client:
        yield client


def expected(module, x: np.ndarray) -> tuple[list[int], np.ndarray]:
    with torch.inference_mode():
        probabilities = torch.softmax(module(torch.from_numpy(x)), dim=1).numpy()
    return probabilities.argmax(1).tolist(), probabilities


def test_raw_rows_get_the_answers_of_the_module_on_the_encoded_rows(table, client):
    _, csv, stream, module = table
    rows = raw_rows(csv, stream)
    x = np.concatenate([w.x for w in stream.windows()])
    predictions, probabilities = expected(module, x)
    answer = client.post("/predict", json={"unit": "u", "rows": rows}).json()
    assert answer["predictions"] == predictions
    np.testing.assert_array_equal(np.array(answer["probabilities"], dtype=np.float32), probabilities)
    assert answer["predicted_classes"] == [stream.classes[p] for p in predictions]
    one = client.post("/predict", json={"unit": "u", "features": rows[5]}).json()
    assert one["predictions"] == predictions[5:6]
    arrays = client.post("/predict", json={"unit": "u", "rows": x[:3].tolist()}).json()  # as before
    assert arrays["predictions"] == predictions[:3]
    ranked = client.post("/rank", json={"unit": "u", "features": rows[5], "k": 2}).json()
    assert ranked["ranking"] == np.argsort(-probabilities[5], kind="stable").tolist()


def test_an_unknown_category_is_answered_as_the_other_column(table, client):
    _, _, stream, module = table
    row = {"store": "east", "price": 9.5, "qty": 3}  # no store "east" in the file
    unseen = client.post("/predict", json={"unit": "u", "features": row})
    x = stream.encoding.transform_records([row])
    assert stream.encoding.feature_names[int(np.flatnonzero(x[0, 2:])[0]) + 2] == "store=(other)"
    assert unseen.json()["probabilities"] == expected(module, x)[1].tolist()


GOOD = {"store": "north", "price": 9.5, "qty": 3}


@pytest.mark.parametrize(
    "bad, words",
    [
        ({"store": "north", "qty": 3}, "row 1, column 'price': missing"),
        ({**GOOD, "aisle": 4}, "row 1, column 'aisle': not a column of the model's input"),
        ({**GOOD, "price": "9.5"}, "row 1, column 'price': expected a number, got the text '9.5'"),
        ({**GOOD, "price": True}, "row 1, column 'price': expected a number, got the boolean true"),
        ({**GOOD, "qty": {"n": 3}}, "row 1, column 'qty': expected a number, got an object"),
        ({**GOOD, "qty": [3]}, "row 1, column 'qty': expected a number, got a list"),
        ({**GOOD, "store": 7}, "row 1, column 'store': expected text"),
        ({**GOOD, "price": 1e39}, "row 1, column 'price': the number 1e+39 is too large"),
    ],
)
def test_a_bad_raw_row_gets_a_422_naming_the_row_and_the_column(client, bad, words):
    r = client.post("/predict", json={"unit": "u", "rows": [GOOD, bad]})
    assert r.status_code == 422 and words in r.json()["error"] and "version v1" in r.json()["error"], r.text


@pytest.mark.parametrize(
    "body, words",
    [
        (b'{"unit": "u", "rows": [{"store": "north", "price": NaN, "qty": 3}]}', "expected a finite number"),
        (
            b'{"unit": "u", "rows": [{"store": "north", "price": 1e999, "qty": 3}]}',
            "expected a finite number",
        ),
        (json.dumps({"unit": "u", "rows": [GOOD, [9.5, 3, 0, 0, 0, 1]]}).encode(), "rows.1"),
        (json.dumps({"unit": "u", "rows": [{f"c{i}": 0 for i in range(100)}]}).encode(), "rows.0"),
        (json.dumps({"unit": "u", "rows": [GOOD] * 1025}).encode(), "at most 1024 items"),
        (json.dumps({"unit": "u", "features": {"x" * 2000: 1}}).encode(), "at most 1024 characters"),
        (json.dumps({"unit": "u", "features": {"store": "north", "price": [[[[[1]]]]]}}).encode(), "a list"),
    ],
)
def test_bodies_of_named_rows_stay_bounded(client, body, words):
    r = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and words in r.json()["error"], r.text


def test_a_version_that_takes_arrays_says_so_to_named_rows(tmp_path):
    root, _, stream, module = table_registry(tmp_path)
    numeric = InputPipeline(stream.feature_shape, tuple(stream.classes)).to_dict()  # no encoding, no names
    with Registry(root) as reg:
        config = reg.get("v1").config
        reg.add(
            VersionRecord("v2", None, "stateless", config=config), module.state_dict(), {"pipeline": numeric}
        )
        reg.promote("v2", reason="test")
    with TestClient(create_app(ServeSettings(registry=root, follow=False))) as client:
        r = client.post("/predict", json={"unit": "u", "features": GOOD})
        assert r.status_code == 422 and "takes numeric arrays, not named rows" in r.json()["error"]
        assert client.post("/predict", json={"unit": "u", "features": [0.0] * 6}).status_code == 200


def test_a_candidate_that_encodes_rows_differently_cannot_shadow_the_champion(tmp_path):
    root, _, _, module = table_registry(tmp_path)
    # The same columns, fitted on another file: other scalings.
    other = TableStream(write_csv(sales(30), tmp_path, "b.csv"), time_column="when", target="label")
    with Registry(root) as reg:
        version = VersionRecord("v2", None, "stateless", config=reg.get("v1").config)
        reg.add(version, module.state_dict(), pipeline_extra(other))
    server = ModelServer(ServeSettings(registry=root, token="t", follow=False))
    try:
        with pytest.raises(ServeError, match="v2 encodes raw rows differently from the champion v1") as err:
            server.start_rollout("shadow", "v2", {})
        assert err.value.status == 422 and server.deployment.rollout is None
    finally:
        server.close()


def test_a_maximal_body_of_named_rows_fits_its_limit():
    """Long column names and categories, and unseen values up to TEXT_BYTES, pretty-printed."""
    long = "K" * 300
    encoding = TableEncoding(
        (NumericColumn(long, 0.0, 1.0), CategoricalColumn("c" * 50, ("\u00e9" * 200, "b")))
    )
    pipeline = InputPipeline((encoding.width,), (0, 1), encoding=encoding)
    rule = BodyLimits.of(ServeSettings(registry=".", max_body_bytes=1 << 30))  # no ceiling in the way
    limit = rule.predict(pipeline.n_features, rule.named_row_bytes(pipeline))
    assert "named rows" in limit.rule
    row = {long: -2.2250738585072014e-308, "c" * 50: "\u00e9" * 200}
    body = json.dumps({"unit": "\U0001f600" * 512, "rows": [row] * 1024}, indent=4).encode()
    assert len(body) <= limit.bytes


# ---- end to end -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_server_answers_raw_csv_rows_as_the_runs_champion_does(tmp_path: Path):
    """perennial-run on a CSV, then the server on its registry alone (the CSV moved away): the file's
    raw rows get the champion's predictions on the loop's encoded rows."""
    csv = unprepared_csv(tmp_path / "orders.csv", n=600)
    out = tmp_path / "run"
    done = perennial_run(
        "data=table",
        f"data.path={csv}",
        "data.time_column=Order Date",
        "data.target=label",
        "data.window=30D",
        "logger=none",
        f"hydra.run.dir={out}",
        *FAST,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    root = out / "registry"
    with Registry(root, create=False, readonly=True) as reg:
        champion = reg.champion()
        assert reg.load_extra(champion, "pipeline") is not None, "the loop stored no pipeline extra"
        config = reg.get(champion).config
        schema = reg.load_extra(champion, "schema") or {}
        weights = reg.load_weights(champion)
    # The champion as the loop built it, on the rows as the loop encoded them.
    stream, build = stream_and_builder(OmegaConf.create({k: config[k] for k in ("data", "model")}))
    module = build(**schema)
    module.load_state_dict(weights)
    x = np.concatenate([w.x for w in stream.windows()])
    predictions, probabilities = expected(module.eval(), x)
    # The file's rows as a client sends them; the row the loop set aside (a missing amount) is not sent.
    rows = [r for r in raw_rows(csv, stream) if None not in r.values()]
    assert len(rows) == len(x)
    csv.rename(tmp_path / "moved.csv")  # the server must not need the training data
    with TestClient(create_app(ServeSettings(registry=root, follow=False))) as client:
        answer = client.post("/predict", json={"unit": "u", "rows": rows})
    assert answer.status_code == 200, answer.text
    assert answer.json()["version"] == champion
    assert answer.json()["predictions"] == predictions
    np.testing.assert_array_equal(np.array(answer.json()["probabilities"], dtype=np.float32), probabilities)
    assert set(answer.json()["predicted_classes"]) <= {"fraud", "ok"}

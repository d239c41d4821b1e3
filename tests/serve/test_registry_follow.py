"""The server and its registry agree: a version that cannot serve is refused (409/422) before the
registry changes, a champion changed by another process is followed, and reading never writes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from omegaconf import OmegaConf

from perennial.cli.common import stream_and_builder
from perennial.cli.registry import main as registry_cli
from perennial.registry import Registry, RegistryIndexError, VersionRecord
from perennial.serve import ServeSettings, create_app
from perennial.serve.app import ModelServer, ServeError
from perennial.serve.models import UnservableVersion
from tests.closed_loop_helpers import CONFIG, make_registry

from .stored import pipeline_extra


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """v1 (champion), v2 and v3: untrained but sound models of one architecture."""
    return make_registry(tmp_path / "registry")


@pytest.fixture
def server(root):
    servers = []

    def make(**settings) -> ModelServer:
        servers.append(ModelServer(ServeSettings(registry=root, token="t", **{"follow": False, **settings})))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def _damage(root: Path, version: str) -> None:
    weights = root / "versions" / version / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])


def _nan_version(root: Path) -> str:
    stream, build = stream_and_builder(OmegaConf.create(CONFIG))
    state = {k: torch.full_like(v, float("nan")) for k, v in build().state_dict().items()}
    with Registry(root) as reg:
        return reg.add(
            VersionRecord(reg.next_id("stateless", None), None, "stateless", config=CONFIG),
            state,
            pipeline_extra(stream),
        ).id


def _registry(root: Path) -> tuple[str | None, list[str]]:
    with Registry(root, create=False, readonly=True) as reg:
        return reg.champion(), [h["action"] for h in reg.champion_history()]


def test_promoting_a_damaged_or_nan_version_is_refused_and_changes_nothing(root, server):
    s = server()
    _damage(root, "v2")
    nan = _nan_version(root)
    for version, words in (
        ("v2", "weights.safetensors fails its checksum"),
        (nan, "its weights are not finite"),
    ):
        with pytest.raises(ServeError) as err:
            s.promote(version)
        assert err.value.status == 422
        assert f"version {version} cannot serve: " in err.value.message and words in err.value.message
        assert err.value.message.endswith("v1 goes on serving")
    assert _registry(root) == ("v1", ["promote"])
    assert s.deployment.champion.version == "v1" and s.swaps == 0


def test_rollback_to_a_damaged_version_is_refused_before_the_registry_changes(root, server):
    s = server()
    s.promote("v2")
    _damage(root, "v1")  # v1 is still in the server's memory, but a restart would load these files
    with pytest.raises(ServeError) as err:
        s.rollback()
    assert err.value.status == 422 and "version v1 cannot serve: weights.safetensors" in err.value.message
    assert _registry(root) == ("v2", ["promote", "promote"])
    assert s.deployment.champion.version == "v2"


def test_a_rollout_of_a_damaged_candidate_is_refused(root, server):
    s = server()
    _damage(root, "v3")
    with pytest.raises(ServeError) as err:
        s.start_rollout("shadow", "v3", {})
    assert err.value.status == 422 and "version v3 cannot serve" in err.value.message
    assert s.deployment.rollout is None


def test_http_promote_of_a_bad_version_answers_422_naming_it(root):
    _damage(root, "v2")
    with TestClient(create_app(ServeSettings(registry=root, token="t", follow=False))) as client:
        r = client.post("/promote", headers={"Authorization": "Bearer t"}, json={"version": "v2"})
        assert r.status_code == 422 and "version v2 cannot serve" in r.json()["error"]
        assert client.get("/status").json()["champion"] == "v1"
    assert _registry(root)[0] == "v1"


def test_the_server_follows_a_promote_by_hand(root, server, capsys):
    s = server()
    assert registry_cli([str(root), "promote", "v2"]) == 0
    status = s.status()
    assert status["champion"] == "v1" and status["registry_champion"] == "v2"
    assert status["follow"]["note"].startswith("serve.follow is off: v1 serves")  # this server polls by hand
    s.follow_registry()
    status = s.status()
    assert status["champion"] == status["registry_champion"] == "v2" and status["follow"]["note"] is None
    assert {v["id"]: v["status"] for v in status["versions"]}["v2"] == "champion"
    assert s.swaps == 1


def test_a_promote_by_hand_during_a_rollout_stops_it_and_the_server_follows(root, server, capsys):
    s = server()
    s.start_rollout("shadow", "v3", {})
    assert registry_cli([str(root), "promote", "v2"]) == 0
    s.follow_registry()
    status = s.status()
    assert status["champion"] == "v2" and status["rollout"] is None and status["follow"]["note"] is None
    with Registry(root, create=False, readonly=True) as registry:
        (record,) = registry.rollouts.all()
        assert record.status == "stopped" and "champion changed to v2" in record.reason
        assert registry.get("v3").status == "candidate"  # not judged: it may be rolled out again


def test_a_registry_champion_that_cannot_serve_is_not_followed(root, server):
    s = server()
    with Registry(root, create=False) as reg:  # the index changed by a tool that checks nothing
        reg.promote("v3")
    _damage(root, "v3")
    s.follow_registry()
    status = s.status()
    assert status["champion"] == "v1" and status["registry_champion"] == "v3"
    assert (
        "the registry's champion is v3, which is refused: version v3 cannot serve" in status["follow"]["note"]
    )
    assert registry_cli([str(root), "promote", "v2"]) == 0  # the registry moves on: followed again
    s.follow_registry()
    assert s.status()["champion"] == "v2"


def test_follow_runs_on_its_own_every_poll(root, server):
    s = server(follow=True, poll_s=0.05)
    assert registry_cli([str(root), "promote", "v2"]) == 0
    deadline = time.monotonic() + 20
    while s.deployment.champion.version != "v2":
        assert time.monotonic() < deadline, s.status()["follow"]
        time.sleep(0.05)
    assert s.status()["registry_champion"] == "v2"


def test_status_only_reads_the_registry(root, server):
    s = server()
    debris = root / "versions" / "v9"  # what a crashed writer leaves: only the loop may remove it
    debris.mkdir()
    assert [v["id"] for v in s.status()["versions"]] == ["v1", "v2", "v3"]
    assert debris.is_dir()


@pytest.mark.parametrize("content", [b"", b"garbage " * 1000])
def test_the_server_refuses_to_start_on_an_unusable_index(root, content):
    index = root / "index.sqlite"
    index.write_bytes(content)
    for suffix in ("-wal", "-shm"):
        Path(f"{index}{suffix}").unlink(missing_ok=True)
    with pytest.raises(RegistryIndexError, match=f"registry index {index} is unusable"):
        ModelServer(ServeSettings(registry=root, follow=False))
    assert index.read_bytes() == content


def test_the_server_refuses_to_start_on_a_champion_that_cannot_serve(root):
    _damage(root, "v1")
    with pytest.raises(UnservableVersion, match=r"version v1 cannot serve: weights.safetensors fails"):
        ModelServer(ServeSettings(registry=root, follow=False))


def test_a_bad_poll_interval_is_refused(root):
    with pytest.raises(ValueError, match=r"serve.poll_s must be a number of seconds > 0, got 0"):
        ModelServer(ServeSettings(registry=root, follow=True, poll_s=0))

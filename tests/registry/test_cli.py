"""perennial-registry: what an operator sees and can change."""

from pathlib import Path

import pytest
import torch

from perennial.cli.registry import main
from perennial.registry import Registry, VersionRecord


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "registry"
    with Registry(root) as reg:
        for kind, parent, acc in [
            ("stateless", None, 0.80),
            ("stateful", "v1", 0.84),
            ("stateful", "v1", 0.70),
        ]:
            record = VersionRecord(
                reg.next_id(kind, parent),
                parent,
                kind,
                metrics={"accuracy": acc},
                config={"lr": 0.01},
                trained_on_windows=[0],
            )
            reg.add(record, {"w": torch.zeros(2)})
        reg.promote("v1", window=0)
        reg.record_decision("v1.1", 1, "promote", {"gain": 0.04})
        reg.promote("v1.1", window=1, reason="gate")
        reg.record_decision("v1.2", 2, "reject", {"gain": -0.1})
        reg.reject("v1.2", window=2)
    return root


def test_list_shows_tree_and_champion(root, capsys):
    assert main([str(root), "list"]) == 0
    out = capsys.readouterr().out
    assert "├── v1.1  stateful  champion" in out and "└── v1.2  stateful  rejected" in out
    assert out.splitlines()[-1] == "champion: v1.1"


def test_show_prints_record_and_decisions(root, capsys):
    assert main([str(root), "show", "v1.2"]) == 0
    out = capsys.readouterr().out
    assert "parent: v1" in out and "status: rejected" in out
    assert '"accuracy": 0.7' in out and '"lr": 0.01' in out
    assert 'window 2  reject  {"gain": -0.1}' in out


def test_promote_and_rollback_change_the_champion(root, capsys):
    assert main([str(root), "promote", "v1.2", "--reason", "operator trusts it"]) == 0
    out = capsys.readouterr().out
    assert "promoted v1.2 to champion (overriding its rejected status)" in out and "retired v1.1" in out

    assert main([str(root), "rollback"]) == 0
    assert "rolled back v1.2; champion is v1.1 again" in capsys.readouterr().out
    with Registry(root) as reg:
        assert reg.champion() == "v1.1" and reg.get("v1.2").status == "rolled_back"
        assert [h["action"] for h in reg.champion_history()] == ["promote", "promote", "override", "rollback"]


def test_errors_exit_with_a_message(root, tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert main([str(missing), "list"]) == 2
    assert f"no registry at {missing}" in capsys.readouterr().err
    assert not missing.exists()  # looking must not create a registry

    assert main([str(root), "show", "v7"]) == 2
    assert "unknown version 'v7'; known versions: v1, v1.1, v1.2" in capsys.readouterr().err

    assert main([str(root), "rollback"]) == 0
    assert main([str(root), "rollback"]) == 1  # v1 was the first champion
    assert "no earlier champion" in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"", b"not a database at all " * 100])
@pytest.mark.parametrize("command", [["list"], ["promote", "v1.2"]])
def test_an_unusable_index_is_one_line_exit_2_and_left_alone(root, capsys, content, command):
    index = root / "index.sqlite"
    index.write_bytes(content)
    for suffix in ("-wal", "-shm"):
        Path(f"{index}{suffix}").unlink(missing_ok=True)
    assert main([str(root), *command]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"registry index {index} is unusable" in err
    assert index.read_bytes() == content  # not replaced by a fresh, empty registry


def test_promote_and_rollback_refuse_a_version_with_damaged_weights(root, capsys):
    weights = root / "versions" / "v1.2" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4])
    assert main([str(root), "promote", "v1.2"]) == 1
    err = capsys.readouterr().err
    assert "version v1.2: weights.safetensors fails its checksum" in err
    with Registry(root, create=False) as reg:
        assert reg.champion() == "v1.1" and reg.get("v1.2").status == "rejected"

    # v1 is what a rollback would restore: a damaged v1 keeps v1.1 the champion.
    weights = root / "versions" / "v1" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4])
    assert main([str(root), "rollback"]) == 1
    assert "version v1: weights.safetensors fails its checksum" in capsys.readouterr().err
    with Registry(root, create=False) as reg:
        assert reg.champion() == "v1.1" and [h["action"] for h in reg.champion_history()] == [
            "promote",
            "promote",
        ]


def test_promote_refuses_non_finite_weights(root, capsys):
    with Registry(root) as reg:
        reg.add(VersionRecord("v2", None, "stateless"), {"w": torch.tensor([1.0, float("inf")])})
    assert main([str(root), "promote", "v2"]) == 1
    assert "version v2: its weights are not finite: w holds 0 NaN and 1 infinite value(s) of 2" in (
        capsys.readouterr().err
    )
    with Registry(root, create=False) as reg:
        assert reg.champion() == "v1.1"


def test_list_and_show_only_read(root, capsys):
    debris = root / "versions" / "v7"
    debris.mkdir()
    assert main([str(root), "list"]) == 0 and main([str(root), "show", "v1"]) == 0
    assert debris.is_dir()  # only the loop, which owns the registry, cleans up

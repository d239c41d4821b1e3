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

"""The registry: versions survive crashes, champion changes are atomic, rollbacks restore the old champion."""

import pickle
from pathlib import Path

import pytest
import torch

from perennial.registry import Registry, UnknownVersion, VersionRecord


def _weights(value: float) -> dict[str, torch.Tensor]:
    return {"fc.weight": torch.full((3, 2), value), "fc.bias": torch.zeros(3)}


def _add(
    reg: Registry, kind: str = "stateless", parent: str | None = None, value: float = 1.0, **fields
) -> str:
    record = VersionRecord(id=reg.next_id(kind, parent), parent=parent, kind=kind, **fields)
    return reg.add(record, _weights(value)).id


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    with Registry(tmp_path / "registry") as registry:
        yield registry


def test_weights_optimizer_and_buffer_round_trip_without_pickle(reg, monkeypatch):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.Adam(model.parameters())
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(8, 4)).sum().backward()
        opt.step()
    buffer = {"x": torch.randn(5, 4), "y": torch.tensor([0, 1, 1, 0, 1]), "seen": 5, "classes": ["a", "b"]}
    record = VersionRecord(
        id="v1",
        parent=None,
        kind="stateless",
        trained_on_windows=[0, 1],
        n_samples=1234,
        train_seconds=2.5,
        config={"lr": 1e-3, "layers": [4, 2]},
        metrics={"accuracy": 0.8125},
        trigger={"name": "volume", "reason": "1000 new examples"},
        created_window=1,
    )
    reg.add(record, model.state_dict(), extras={"optimizer": opt.state_dict(), "buffer": buffer})

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the registry must not unpickle")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)

    with Registry(reg.root) as reopened:
        assert reopened.get("v1") == record
        weights = reopened.load_weights("v1")
        assert weights.keys() == model.state_dict().keys()
        assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
        optimizer_state = reopened.load_extra("v1", "optimizer")
        restored = torch.optim.Adam(torch.nn.Linear(4, 2).parameters())
        restored.load_state_dict(optimizer_state)  # int parameter keys survived
        for a, b in zip(
            restored.state_dict()["state"].values(), opt.state_dict()["state"].values(), strict=True
        ):
            assert all(torch.equal(a[k], b[k]) for k in ("step", "exp_avg", "exp_avg_sq"))
        loaded_buffer = reopened.load_extra("v1", "buffer")
        assert torch.equal(loaded_buffer["x"], buffer["x"]) and torch.equal(loaded_buffer["y"], buffer["y"])
        assert loaded_buffer["seen"] == 5 and loaded_buffer["classes"] == ["a", "b"]
        assert reopened.load_extra("v1", "strategy") is None


def test_ids_follow_lineage_and_rejected_ids_stay_taken(reg):
    assert _add(reg) == "v1"
    assert _add(reg, "stateful", "v1") == "v1.1"
    reg.reject("v1.1", window=2)
    assert _add(reg, "stateful", "v1") == "v1.2"
    assert _add(reg) == "v2"
    assert _add(reg, "stateful", "v2") == "v2.1"
    assert [r.id for r in reg.versions()] == ["v1", "v1.1", "v1.2", "v2", "v2.1"]
    assert reg.get("v1.1").status == "rejected" and reg.get("v1.1").status_window == 2
    with pytest.raises(ValueError, match="already exists"):
        reg.add(VersionRecord("v1.1", "v1", "stateful"), _weights(0.0))


def test_unknown_version_error_lists_known_ids(reg):
    _add(reg)
    with pytest.raises(UnknownVersion) as err:
        reg.get("v9")
    assert isinstance(err.value, KeyError)
    assert str(err.value) == "unknown version 'v9'; known versions: v1"


def test_crash_between_files_and_index_row_leaves_no_version(reg, monkeypatch):
    def crash(self, record):
        raise RuntimeError("power cut")

    monkeypatch.setattr(Registry, "_insert_row", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        _add(reg, value=1.0)
    monkeypatch.undo()

    assert (reg.versions_dir / "v1").is_dir()  # the files made it; the row did not
    assert reg.versions() == [] and "v1" not in reg
    with pytest.raises(UnknownVersion):
        reg.load_weights("v1")
    # The same id is free and the debris is replaced, not mixed into the new version.
    assert _add(reg, value=2.0) == "v1"
    assert torch.equal(reg.load_weights("v1")["fc.weight"], torch.full((3, 2), 2.0))


def test_crash_debris_is_removed_on_open(tmp_path):
    root = tmp_path / "registry"
    with Registry(root) as reg:
        _add(reg)
    (root / "versions" / "v2").mkdir()  # renamed into place, then the process died before the row
    (root / "versions" / ".tmp-v3-abc").mkdir()  # died while writing files
    with Registry(root) as reg:
        assert sorted(p.name for p in reg.versions_dir.iterdir()) == ["v1"]
        assert _add(reg) == "v2"


def test_exception_in_transaction_rolls_back_promote_decision_and_state(reg):
    _add(reg)
    reg.promote("v1", window=0)
    reg.set_state("resume", {"next_window": 1})
    candidate = _add(reg, "stateful", "v1")

    with pytest.raises(RuntimeError, match="killed"), reg.transaction():
        reg.record_decision(candidate, 1, "promote", {"gain": 0.03})
        reg.promote(candidate, window=1)
        reg.set_state("resume", {"next_window": 2})
        raise RuntimeError("killed before the window finished")

    assert reg.champion() == "v1"
    assert reg.get(candidate).status == "candidate"
    assert reg.decisions() == []
    assert reg.get_state("resume") == {"next_window": 1}
    assert len(reg.champion_history()) == 1

    with reg.transaction():  # the retry commits everything together
        reg.record_decision(candidate, 1, "promote", {"gain": 0.03})
        reg.promote(candidate, window=1)
        reg.set_state("resume", {"next_window": 2})
    assert reg.champion() == candidate and reg.get("v1").status == "retired"
    assert [d["numbers"] for d in reg.decisions(candidate)] == [{"gain": 0.03}]
    assert reg.get_state("resume") == {"next_window": 2}
    assert reg.get_state("missing", default=0) == 0


def test_rollback_restores_the_previous_champion(reg):
    for _ in range(3):
        reg.promote(_add(reg), window=0)  # v1, v2, v3 in turn
    assert reg.rollback("canary lost accuracy") == "v2"
    assert reg.champion() == "v2" and reg.get("v3").status == "rolled_back"
    assert reg.rollback() == "v1"
    assert [r.status for r in reg.versions()] == ["champion", "rolled_back", "rolled_back"]
    with pytest.raises(ValueError, match="no earlier champion"):
        reg.rollback()
    assert reg.champion() == "v1"  # the failed rollback changed nothing


def test_rollback_skips_versions_that_were_rolled_back(reg):
    for _ in range(2):
        reg.promote(_add(reg))  # v1 then v2
    reg.rollback()  # v2 out, v1 back
    reg.promote(_add(reg))  # v3 replaces v1
    assert reg.rollback() == "v1"  # not v2, which was rolled back already


def test_promoting_a_rejected_version_needs_an_override_and_is_recorded(reg):
    reg.promote(_add(reg))
    reg.reject(_add(reg, "stateful", "v1"), window=3)
    with pytest.raises(ValueError, match="rejected"):
        reg.promote("v1.1")
    assert reg.promote("v1.1", reason="looks fine to me", override=True) == "v1"
    last = reg.champion_history()[-1]
    assert (last["action"], last["version"], last["previous"], last["reason"]) == (
        "override",
        "v1.1",
        "v1",
        "looks fine to me",
    )
    with pytest.raises(ValueError, match="champion"):
        reg.reject("v1.1")


def test_lineage_tree_puts_children_under_parents(reg):
    _add(reg, trained_on_windows=[0, 1, 2], n_samples=1234, metrics={"accuracy": 0.8123})
    _add(reg, "stateful", "v1", trained_on_windows=[3])
    _add(reg, "stateful", "v1.1", trained_on_windows=[4, 5])
    _add(reg, "stateful", "v1")
    _add(reg)
    reg.promote("v1.2")
    assert reg.lineage_tree().splitlines() == [
        "v1  stateless  candidate  windows 0-2  n=1,234  acc=0.812",
        "├── v1.1  stateful  candidate  windows 3  n=0",
        "│   v1.2  stateful  champion  windows 4-5  n=0",
        "└── v1.3  stateful  candidate  windows -  n=0",
        "v2  stateless  candidate  windows -  n=0",
    ]


def test_a_long_line_of_fine_tunes_stays_in_one_column(reg):
    _add(reg)
    for parent in ["v1", "v1.1", "v1.2"]:
        _add(reg, "stateful", parent)
    assert [line.split()[0] for line in reg.lineage_tree().splitlines()] == ["v1", "v1.1", "v1.2", "v1.3"]


def test_opening_while_a_writer_adds_leaves_its_files_alone(tmp_path):
    # The CLI may open the registry while the loop is between writing a version's files and committing.
    root = tmp_path / "registry"
    with Registry(root) as writer, writer.transaction():
        _add(writer)
        with Registry(root) as reader:
            assert reader.versions() == []
        assert (writer.versions_dir / "v1").is_dir()
    with Registry(root) as reader:
        assert reader.ids() == ["v1"] and reader.load_weights("v1").keys() == _weights(1.0).keys()

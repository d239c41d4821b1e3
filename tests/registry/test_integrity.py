"""A damaged registry is named and left alone: an unusable index is refused instead of replaced, a
changed or truncated weight file is caught by its checksum, readers never write, and two processes
can write one registry at the same time."""

import multiprocessing
import sqlite3
from pathlib import Path

import pytest
import torch

from perennial.registry import CorruptVersion, Registry, RegistryIndexError, VersionRecord


def _add(reg: Registry, value: float = 1.0, **extras) -> str:
    record = VersionRecord(reg.next_id("stateless", None), None, "stateless")
    weights = {"fc.weight": torch.full((3, 2), value), "fc.bias": torch.zeros(3)}
    return reg.add(record, weights, extras or None).id


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "registry"
    with Registry(root) as reg:
        _add(reg, 1.0)
        _add(reg, 2.0, optimizer={"step": torch.tensor(3.0)})
        reg.promote("v1")
    return root


@pytest.mark.parametrize("create", [True, False])
def test_an_empty_index_is_refused_not_replaced_by_a_fresh_one(tmp_path, create):
    root = tmp_path / "registry"
    root.mkdir()
    (root / "index.sqlite").write_bytes(b"")
    with pytest.raises(RegistryIndexError, match=r"index.sqlite is unusable: it is an empty"):
        Registry(root, create=create)
    assert (root / "index.sqlite").read_bytes() == b""  # nothing written into it
    assert not (root / "versions").exists()


@pytest.mark.parametrize("readonly", [True, False])
def test_a_garbage_index_is_refused_with_its_path_and_left_as_it_was(root, readonly):
    index = root / "index.sqlite"
    garbage = b"this is not a database " * 200
    index.write_bytes(garbage)
    for suffix in ("-wal", "-shm"):
        Path(f"{index}{suffix}").unlink(missing_ok=True)
    with pytest.raises(RegistryIndexError) as err:
        Registry(root, create=False, readonly=readonly)
    assert str(index) in str(err.value) and "not a database" in str(err.value)
    assert index.read_bytes() == garbage


def test_a_damaged_page_is_found_by_check(root):
    index = root / "index.sqlite"
    with Registry(root) as reg:  # fold the WAL into the file, so the damage below is what is read
        reg._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(index.read_bytes())
    page = 4096
    data[page + 100 : 2 * page] = b"\xff" * (page - 100)  # the second page: a table's b-tree
    index.write_bytes(bytes(data))
    with (
        pytest.raises(RegistryIndexError, match=str(index)),
        Registry(root, create=False, readonly=True) as reg,
    ):
        reg.check()


def test_only_the_owner_removes_debris_and_readers_cannot_write(root):
    debris = root / "versions" / "v9"
    debris.mkdir()
    with Registry(root, create=False, readonly=True) as reader:
        assert reader.ids() == ["v1", "v2"]
        with pytest.raises(sqlite3.OperationalError, match=r"readonly"):
            reader.promote("v2")
    with Registry(root, create=False) as writer:  # a promote by hand: writes, never deletes
        writer.promote("v2")
    assert debris.is_dir()
    with Registry(root) as owner:
        assert owner.champion() == "v2"
    assert not debris.exists()


def test_readonly_and_create_false_never_create_a_registry(tmp_path):
    for kwargs in ({"create": False}, {"create": False, "readonly": True}, {"readonly": True}):
        with pytest.raises(FileNotFoundError, match=r"no registry at"):
            Registry(tmp_path / "nowhere", **kwargs)
    assert not (tmp_path / "nowhere").exists()


def test_a_changed_weight_file_fails_its_checksum(root):
    path = root / "versions" / "v2" / "weights.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # one bit of a tensor: still a readable file, but not the one stored
    path.write_bytes(bytes(data))
    with Registry(root, create=False, readonly=True) as reg:
        with pytest.raises(CorruptVersion, match=r"version v2: weights.safetensors fails its checksum"):
            reg.load_weights("v2")
        reg.load_weights("v1")  # the others still load


def test_a_truncated_or_missing_file_is_named(root):
    weights = root / "versions" / "v2" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])
    (root / "versions" / "v2" / "optimizer.safetensors").unlink()
    with Registry(root, create=False, readonly=True) as reg:
        with pytest.raises(CorruptVersion, match=r"v2: weights.safetensors fails its checksum"):
            reg.verify("v2")
        with pytest.raises(CorruptVersion, match=r"v2: optimizer.safetensors is missing"):
            reg.load_extra("v2", "optimizer")


def _drop_checksums(root: Path) -> None:
    """Make the registry look like one written before checksums existed."""
    with sqlite3.connect(root / "index.sqlite") as conn:
        conn.execute("DROP TABLE files")


def test_versions_stored_before_checksums_load_and_new_ones_get_them(root):
    _drop_checksums(root)
    with Registry(root, create=False, readonly=True) as reg:
        assert reg.checksums("v1") == {}
        assert torch.equal(reg.load_weights("v1")["fc.weight"], torch.ones(3, 2))
        reg.verify("v2")
    weights = root / "versions" / "v1" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])  # without a checksum, the reader still refuses it
    with Registry(root, create=False) as reg:
        with pytest.raises(CorruptVersion, match=r"v1: weights.safetensors is not a readable safetensors"):
            reg.load_weights("v1")
        v3 = _add(reg, 3.0)  # the table comes back with the next version
        assert set(reg.checksums(v3)) == {"weights.safetensors"}


def test_verify_refuses_non_finite_weights(root):
    with Registry(root) as reg:
        record = VersionRecord(reg.next_id("stateless", None), None, "stateless")
        reg.add(record, {"fc.weight": torch.full((3, 2), float("nan")), "fc.bias": torch.zeros(3)})
        with pytest.raises(CorruptVersion, match=r"v3: its weights are not finite: fc.weight holds 6 NaN"):
            reg.verify("v3")


def test_rollback_with_expect_refuses_a_registry_changed_meanwhile(root):
    with Registry(root) as reg:
        reg.promote("v2")
        checked = (reg.champion(), reg.rollback_target())
        assert checked == ("v2", "v1")
        _add(reg, 3.0)
        reg.promote("v3")  # another writer, between the check and the rollback
        with pytest.raises(ValueError, match=r"changed meanwhile"):
            reg.rollback(expect=checked)
        assert reg.champion() == "v3"


def _promote_back_and_forth(root: str, rounds: int, ready) -> None:
    ready.wait()
    with Registry(root, create=False) as reg:
        for i in range(rounds):
            reg.promote("v1" if i % 2 else "v2", reason="by hand")


def test_two_processes_write_one_registry_without_losing_a_write(root):
    # The loop adds versions while a person promotes by hand: each write waits for the other's
    # lock (busy timeout) instead of failing, and every write of both is there afterwards.
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    other = ctx.Process(target=_promote_back_and_forth, args=(str(root), 40, ready))
    other.start()
    with Registry(root) as reg:
        ready.set()
        added = [_add(reg, float(i)) for i in range(20)]
        for version in added:
            reg.record_decision(version, None, "reject", {"i": 1})
    other.join(60)
    assert other.exitcode == 0
    with Registry(root, create=False, readonly=True) as reg:
        assert reg.ids()[2:] == added
        assert sum(h["reason"] == "by hand" for h in reg.champion_history()) == 40
        assert len(reg.decisions()) == 20
        assert [r.status for r in reg.versions()].count("champion") == 1
        for version in added:
            reg.verify(version)

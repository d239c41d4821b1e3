"""Version ids: how a lineage of retrains and fine-tunes is numbered."""

import re

import pytest

from perennial.registry.versions import next_version_id, parse_version, version_key


def test_a_lineage_is_numbered_by_kind():
    ids: list[str] = []

    def make(kind: str, parent: str | None) -> str:
        ids.append(next_version_id(ids, kind, parent))
        return ids[-1]

    assert make("stateless", None) == "v1"
    assert make("stateful", "v1") == "v1.1"
    assert make("stateful", "v1.1") == "v1.2"  # fine-tuning a fine-tune stays in the major line
    assert make("stateless", "v1.2") == "v2"
    assert make("stateful", "v2") == "v2.1"
    # A late fine-tune of an old line continues that line, after every id it already used.
    assert make("stateful", "v1") == "v1.3"
    assert make("stateless", None) == "v3"


def test_ids_of_rejected_versions_are_not_reused():
    # v1.1 and v1.2 were rejected and v1 is still the parent: the next try is v1.3, not v1.1 again.
    assert next_version_id(["v1", "v1.1", "v1.2"], "stateful", "v1") == "v1.3"


def test_bad_input_fails_with_a_message_naming_it():
    with pytest.raises(ValueError, match="pass the parent"):
        next_version_id(["v1"], "stateful", None)
    with pytest.raises(ValueError, match="'stateless', 'stateful'"):
        next_version_id(["v1"], "finetune", "v1")
    with pytest.raises(ValueError, match="'v7'"):
        next_version_id(["v1"], "stateful", "v7")
    for bad in ["1.2", "v1.2.3", "v01", "v1.0", "v", "version1"]:
        with pytest.raises(ValueError, match=re.escape(repr(bad))):
            parse_version(bad)


def test_versions_sort_numerically():
    assert sorted(["v10", "v2.1", "v1.10", "v1.9", "v1", "v2"], key=version_key) == [
        "v1",
        "v1.9",
        "v1.10",
        "v2",
        "v2.1",
        "v10",
    ]

"""Version ids ("v1", "v1.2", "v2"): parsing, ordering, and choosing the next id for a new candidate.

A stateless retrain starts a new major line; a stateful fine-tune continues its parent's line.

>>> next_version_id([], "stateless", None)
'v1'
>>> next_version_id(["v1", "v1.1"], "stateful", "v1")
'v1.2'
>>> next_version_id(["v1", "v1.1", "v1.2"], "stateless", "v1.2")
'v2'
>>> sorted(["v2", "v1.10", "v1.2", "v1"], key=version_key)
['v1', 'v1.2', 'v1.10', 'v2']
"""

from __future__ import annotations

import re
from collections.abc import Iterable

KINDS = ("stateless", "stateful")

# No leading zeros and no ".0": every version has exactly one spelling, so ids compare as strings too.
_VERSION_RE = re.compile(r"v([1-9][0-9]*)(?:\.([1-9][0-9]*))?")


def parse_version(version_id: str) -> tuple[int, int]:
    """Return ``(major, minor)``; a major-line root such as ``"v3"`` has minor 0."""
    match = _VERSION_RE.fullmatch(version_id) if isinstance(version_id, str) else None
    if match is None:
        raise ValueError(
            f"bad version id {version_id!r}: expected 'v<major>' or 'v<major>.<minor>', e.g. 'v1', 'v1.2'"
        )
    return int(match.group(1)), int(match.group(2) or 0)


def version_key(version_id: str) -> tuple[int, int]:
    """Sorting key: numeric, so v1.10 comes after v1.9."""
    return parse_version(version_id)


def next_version_id(existing_ids: Iterable[str], kind: str, parent: str | None) -> str:
    """The id for a new version of ``kind``; ids in ``existing_ids`` (rejected ones too) are never reused."""
    existing = [parse_version(v) for v in existing_ids]
    if kind == "stateless":
        return f"v{max((major for major, _ in existing), default=0) + 1}"
    if kind == "stateful":
        if parent is None:
            raise ValueError("a stateful version fine-tunes a parent: pass the parent's id")
        if parse_version(parent) not in existing:
            raise ValueError(f"parent {parent!r} is not a known version")
        major = parse_version(parent)[0]
        return f"v{major}.{max(minor for m, minor in existing if m == major) + 1}"
    raise ValueError(f"unknown version kind {kind!r}: expected one of {', '.join(map(repr, KINDS))}")

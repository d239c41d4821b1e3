"""The versioned model registry: candidate and champion versions, their lineage, pickle-free checkpoints."""

from perennial.registry.store import (
    STATUSES,
    CorruptVersion,
    Registry,
    RegistryIndexError,
    UnknownVersion,
    VersionRecord,
)
from perennial.registry.tensorfile import atomic_write_bytes, atomic_write_text, load_tree, save_tree
from perennial.registry.versions import KINDS, next_version_id, parse_version, version_key

__all__ = [
    "KINDS",
    "STATUSES",
    "CorruptVersion",
    "Registry",
    "RegistryIndexError",
    "UnknownVersion",
    "VersionRecord",
    "atomic_write_bytes",
    "atomic_write_text",
    "load_tree",
    "next_version_id",
    "parse_version",
    "save_tree",
    "version_key",
]

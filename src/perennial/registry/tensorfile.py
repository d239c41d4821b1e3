"""Checkpoint files that load without unpickling: nested state (optimizer, buffer) as one safetensors file.

Tensors go into the safetensors body; the structure around them (dicts with int or str keys, lists,
tuples, JSON scalars) goes into the header metadata as JSON. Loading never runs pickle, so a
checkpoint from an untrusted or stale run cannot execute code.

>>> import tempfile, torch
>>> path = tempfile.mkdtemp() + "/opt.safetensors"
>>> save_tree(path, {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"betas": (0.9, 0.99)}]})
>>> load_tree(path)
{'state': {0: {'step': tensor(3.)}}, 'param_groups': [{'betas': (0.9, 0.99)}]}
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load, load_file, save_file

# Header metadata key holding the JSON skeleton of the tree.
TREE_KEY = "perennial.tree"


def fsync_dir(directory: str | Path) -> None:
    """Make a rename or new file in ``directory`` durable (a no-op where directories cannot be fsynced)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_replace(path: str | Path, write: Callable[[str], None]) -> None:
    # Readers see the old file or the new one, never half a file: write a sibling, fsync, rename over.
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; the file should read like any other
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old content or the new, never a mix."""
    _atomic_replace(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    """Text version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode(encoding))


class _TensorCollector:
    """Names tensors for the file, making them storable: on CPU, contiguous, and not sharing storage."""

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self._names_by_object: dict[int, str] = {}
        self._storages: set[int] = set()

    def add(self, tensor: torch.Tensor, source: object | None = None) -> str:
        # In a tree the same object twice is stored once and comes back as one object, as it was saved.
        # ``source`` is the object as it sits in the tree, alive for the whole save, so its id is stable.
        if source is not None and id(source) in self._names_by_object:
            return self._names_by_object[id(source)]
        t = tensor.detach().cpu()
        if not t.is_contiguous():
            t = t.contiguous()
        elif t.numel() and t.untyped_storage().data_ptr() in self._storages:
            # safetensors refuses two entries over one storage (views, tied weights): give this one its own.
            t = t.clone()
        if t.numel():
            self._storages.add(t.untyped_storage().data_ptr())
        name = f"t{len(self.tensors)}"
        self.tensors[name] = t
        if source is not None:
            self._names_by_object[id(source)] = name
        return name


def save_tensors(
    path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> None:
    """Atomically save a flat name -> tensor mapping (a model ``state_dict``) as a plain safetensors file.

    Tied or otherwise aliased tensors are cloned, since safetensors refuses shared storage.
    """
    collector = _TensorCollector()
    flat = {}
    for key, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"cannot save {key!r}: expected a tensor, got {type(tensor).__name__}")
        flat[key] = collector.tensors[collector.add(tensor)]
    _atomic_replace(path, lambda tmp: save_file(flat, tmp, metadata={"format": "pt", **(metadata or {})}))


def _encode(node: Any, tensors: _TensorCollector, where: str) -> Any:
    # Every container becomes a tagged JSON object ({"dict": ...}, {"tuple": ...}); lists stay lists.
    # So a JSON object in the skeleton is always a tag, and user keys cannot collide with the tags.
    if isinstance(node, torch.Tensor):
        return {"tensor": tensors.add(node, node)}
    if isinstance(node, np.ndarray):
        if node.dtype == object:
            raise TypeError(
                f"cannot save an object array at {where}: only numeric numpy arrays are supported"
            )
        # A copy, because torch.from_numpy warns on read-only arrays and the bytes are written right away.
        return {"ndarray": tensors.add(torch.from_numpy(np.array(node, order="C", copy=True)), node)}
    if isinstance(node, Mapping):
        items = []
        for key, value in node.items():
            if not (key is None or isinstance(key, str | int | float)):
                raise TypeError(
                    f"cannot save dict key {key!r} at {where}: keys must be str, int, float, bool or None"
                )
            items.append([key, _encode(value, tensors, f"{where}[{key!r}]")])
        return {"dict": items}
    if isinstance(node, tuple):
        return {"tuple": [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(node)]}
    if isinstance(node, list):
        return [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(node)]
    if node is None or isinstance(node, str | int | float):
        return node
    if isinstance(node, np.generic):
        return node.item()
    raise TypeError(
        f"cannot save {type(node).__name__} at {where}: leaves must be tensors, numpy arrays, "
        "or JSON scalars (int, float, bool, str, None)"
    )


def _decode(node: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(node, list):
        return [_decode(v, tensors) for v in node]
    if not isinstance(node, dict):
        return node
    ((tag, payload),) = node.items()
    if tag == "tensor":
        return tensors[payload]
    if tag == "ndarray":
        return tensors[payload].numpy()
    if tag == "dict":
        return {key: _decode(value, tensors) for key, value in payload}
    if tag == "tuple":
        return tuple(_decode(v, tensors) for v in payload)
    raise ValueError(f"unknown tag {tag!r} in a perennial tree skeleton")


def save_tree(path: str | Path, tree: Mapping[str, Any]) -> None:
    """Atomically save a nested state (e.g. ``optimizer.state_dict()``) to one safetensors file.

    Tuples stay tuples, int keys stay ints, numpy arrays come back as numpy arrays; tensors come back
    on CPU. Named tuples and dict subclasses come back as plain tuples and dicts.
    """
    if not isinstance(tree, Mapping):
        raise TypeError(f"save_tree needs a mapping at the top, got {type(tree).__name__}")
    tensors = _TensorCollector()
    skeleton = json.dumps(_encode(tree, tensors, "tree"))
    _atomic_replace(
        path, lambda tmp: save_file(tensors.tensors, tmp, metadata={"format": "pt", TREE_KEY: skeleton})
    )


def load_tree(path: str | Path) -> dict[str, Any]:
    """Load a tree written by :func:`save_tree`, using safetensors and json only (no pickle)."""
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    if TREE_KEY not in metadata:
        raise ValueError(f"{path} holds no perennial tree (was it written by save_tree?)")
    return _decode(json.loads(metadata[TREE_KEY]), load_file(str(path)))


def tree_from_bytes(data: bytes, name: str = "the file") -> dict[str, Any]:
    """:func:`load_tree` for a file's bytes already read (and checksummed): what is verified is what loads."""
    metadata = _header(data).get("__metadata__") or {}
    if TREE_KEY not in metadata:
        raise ValueError(f"{name} holds no perennial tree (was it written by save_tree?)")
    return _decode(json.loads(metadata[TREE_KEY]), load(data))


def _header(data: bytes) -> dict[str, Any]:
    # The safetensors layout: an 8-byte little-endian header length, then the JSON header.
    if len(data) < 8:
        raise ValueError(f"{len(data)} bytes is too short for a safetensors file")
    size = int.from_bytes(data[:8], "little")
    if size > len(data) - 8:
        raise ValueError(f"header of {size} bytes runs past the end of the {len(data)}-byte file")
    header = json.loads(data[8 : 8 + size])
    if not isinstance(header, dict):
        raise ValueError("the safetensors header is not a JSON object")
    return header

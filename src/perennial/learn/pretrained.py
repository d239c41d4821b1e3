"""Starting a backbone from pretrained weights: loading a safetensors file into it, freezing parameters
and giving parameter groups their own learning rates. Every check runs when the backbone is built,
so a bad file or a bad name fails before any training starts.

Names are the backbone's own parameter names (``layer4.0.conv1.weight`` for a torchvision ResNet);
an entry of ``freeze`` or ``lrs`` is a prefix of them, ending at a dot (``layer1`` matches
``layer1.0.conv1.weight``, not ``layer10.weight``). ``head`` names the output layer, the last linear
layer that head growth widens, whatever the backbone calls it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from torch import nn

HEAD = "head"  # the name ``freeze`` and ``lrs`` give the output layer
ALL_BUT_HEAD = "all_but_head"  # ``freeze`` value: train the output layer only


def output_layer(backbone: nn.Module) -> str:
    """The name of the backbone's output layer: its last linear layer, the classifier head.

    >>> output_layer(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
    '2'
    """
    linear = [name for name, m in backbone.named_modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise ValueError(f"{type(backbone).__name__} has no linear output layer")
    return linear[-1]


def matches(name: str, prefix: str) -> bool:
    """Whether parameter ``name`` lies under ``prefix`` (a whole dotted component, not a substring).

    >>> matches("layer1.0.conv1.weight", "layer1"), matches("layer10.weight", "layer1")
    (True, False)
    """
    return name == prefix or name.startswith(prefix + ".")


def _resolve(backbone: nn.Module, prefix: str) -> str:
    return output_layer(backbone) if prefix == HEAD else prefix


def _top_level(backbone: nn.Module) -> list[str]:
    return sorted({name.split(".")[0] for name, _ in backbone.named_parameters()})


def _unmatched(backbone: nn.Module, prefix: str, what: str) -> ValueError:
    return ValueError(
        f"model.{what} entry {prefix!r} matches no parameter of {type(backbone).__name__}; its top-level "
        f"prefixes are {_top_level(backbone)} (and {HEAD!r}, the output layer)"
    )


def _few(names: Iterable[str], n: int = 5) -> str:
    names = sorted(names)
    more = f" and {len(names) - n} more" if len(names) > n else ""
    return f"{names[:n]}{more}"


def load_pretrained(backbone: nn.Module, path: str | Path, skip: Sequence[str] = (HEAD,)) -> list[str]:
    """Load the tensors of the safetensors file at ``path`` into ``backbone``, except those under the
    prefixes in ``skip`` (default: the output layer, which is new because the number of classes
    differs), and return the names loaded.

    Keys may carry a ``backbone.`` prefix (a perennial version's weights file). Refused, each with a
    ``ValueError`` naming it: a missing file, a non-finite tensor, a tensor whose shape differs
    (the first one, both shapes), keys the backbone lacks or misses (a few, then a count).
    Nothing is unpickled: safetensors holds tensors only.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from perennial.registry.store import non_finite

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"model.weights {str(path)!r} is not a file")
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError) as e:
        raise ValueError(f"model.weights {str(path)!r} is not a readable safetensors file: {e}") from e
    if tensors and all(k.startswith("backbone.") for k in tensors):
        tensors = {k.removeprefix("backbone."): v for k, v in tensors.items()}
    skipped = [_resolve(backbone, s) for s in skip]
    own = backbone.state_dict()
    tensors = {k: v for k, v in tensors.items() if not any(matches(k, s) for s in skipped)}
    wanted = {k for k in own if not any(matches(k, s) for s in skipped)}
    # torchvision's BatchNorm counts batches in a buffer some exporters drop; it is never read in training.
    wanted -= {k for k in wanted - set(tensors) if k.endswith("num_batches_tracked")}
    unexpected, missing = set(tensors) - set(own), wanted - set(tensors)
    if unexpected or missing:
        raise ValueError(
            f"model.weights {str(path)!r} does not fit {type(backbone).__name__}: "
            + "; ".join(
                part
                for part in (
                    f"{len(unexpected)} tensor(s) it does not have: {_few(unexpected)}" if unexpected else "",
                    f"{len(missing)} tensor(s) missing from the file: {_few(missing)}" if missing else "",
                )
                if part
            )
        )
    for name in own:  # the backbone's order: the first mismatch is the first layer that differs
        if name in tensors and tensors[name].shape != own[name].shape:
            raise ValueError(
                f"model.weights {str(path)!r}: tensor {name!r} has shape {tuple(tensors[name].shape)} in the "
                f"file but {tuple(own[name].shape)} in {type(backbone).__name__}"
            )
    bad = non_finite(tensors)
    if bad is not None:
        raise ValueError(f"model.weights {str(path)!r}: {bad}")
    backbone.load_state_dict(tensors, strict=False)
    return sorted(tensors)


def freeze(backbone: nn.Module, spec: str | Sequence[str]) -> list[str]:
    """Stop training the parameters under the prefixes in ``spec`` (or every parameter but the output
    layer's, for ``"all_but_head"``) and return their names. An entry matching no parameter is a
    ``ValueError`` naming it and the prefixes there are.

    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> freeze(net, "all_but_head")
    ['0.bias', '0.weight']
    >>> freeze(net, ["1"])
    Traceback (most recent call last):
    ValueError: model.freeze entry '1' matches no parameter of Sequential; its top-level prefixes are ['0', '2'] (and 'head', the output layer)
    """  # noqa: E501
    names = [name for name, _ in backbone.named_parameters()]
    if isinstance(spec, str):
        if spec != ALL_BUT_HEAD:
            raise ValueError(
                f"model.freeze must be a list of parameter prefixes or {ALL_BUT_HEAD!r}, got {spec!r}"
            )
        head = output_layer(backbone)
        frozen = [n for n in names if not matches(n, head)]
    else:
        frozen = []
        for entry in spec:
            prefix = _resolve(backbone, str(entry))
            hit = [n for n in names if matches(n, prefix)]
            if not hit:
                raise _unmatched(backbone, str(entry), "freeze")
            frozen += hit
    params = dict(backbone.named_parameters())
    for name in frozen:
        params[name].requires_grad_(False)
    return sorted(set(frozen))


def check_lrs(backbone: nn.Module, lrs: Mapping[str, float] | None) -> dict[str, float]:
    """``lrs`` (parameter prefix -> learning rate) checked against ``backbone``: each prefix matches a
    trainable parameter and each rate is a finite number > 0, or a ``ValueError`` names the entry."""
    out: dict[str, float] = {}
    trainable = [n for n, p in backbone.named_parameters() if p.requires_grad]
    for prefix, lr in dict(lrs or {}).items():
        if isinstance(lr, bool) or not isinstance(lr, int | float) or not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"model.lrs[{prefix!r}] must be a finite number > 0, got {lr!r}")
        resolved = _resolve(backbone, str(prefix))
        if not any(matches(n, resolved) for n in trainable):
            frozen = any(matches(n, resolved) for n, _ in backbone.named_parameters())
            if frozen:
                raise ValueError(f"model.lrs entry {prefix!r} names only frozen parameters (model.freeze)")
            raise _unmatched(backbone, str(prefix), "lrs")
        out[str(prefix)] = float(lr)
    return out


def param_groups(
    named: Sequence[tuple[str, nn.Parameter]], backbone: nn.Module, lrs: Mapping[str, float], lr: float
) -> list[dict]:
    """Optimizer groups for the trainable ``named`` parameters (names under ``backbone.``): one per
    entry of ``lrs`` that has parameters, in its order, then the rest at ``lr``. A parameter under
    several entries goes to the longest (most specific) one. Each group carries its ``param_names``,
    so a later fine-tune finds each parameter's optimizer state by name (``ClassifierModule`` drops them
    when one group holds every parameter in order: position then says as much)."""
    prefixes = {p: "backbone." + _resolve(backbone, p) for p in lrs}
    members: dict[str | None, list[tuple[str, nn.Parameter]]] = {p: [] for p in lrs}
    members[None] = []
    for name, param in named:
        under = [p for p, full in prefixes.items() if matches(name, full)]
        members[max(under, key=lambda p: len(prefixes[p])) if under else None].append((name, param))
    rates = {**lrs, None: lr}
    return [
        {"params": [p for _, p in group], "param_names": [n for n, _ in group], "lr": rates[key]}
        for key, group in members.items()
        if group
    ]


def state_by_name(optimizer_state: Mapping, names: Sequence[str]) -> dict[str, dict]:
    """A saved optimizer state's per-parameter state keyed by parameter name. States saved before
    groups carried names (one group over every parameter) are read in ``names`` order."""
    ids: dict[int, str] = {}
    for group in optimizer_state.get("param_groups", []):
        group_names = group.get("param_names")
        for i, index in enumerate(group["params"]):
            if group_names is not None:
                ids[int(index)] = group_names[i]
            elif int(index) < len(names):
                ids[int(index)] = names[int(index)]
    return {ids[int(k)]: v for k, v in optimizer_state.get("state", {}).items() if int(k) in ids}

"""``perennial-registry``: look at a registry's lineage and versions, and let a human promote or roll back."""

from __future__ import annotations

import argparse
import json
import signal
import sqlite3
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from perennial.registry.store import Registry, RegistryIndexError, UnknownVersion, describe


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="perennial-registry", description="Inspect a perennial model registry and change its champion."
    )
    parser.add_argument(
        "registry", type=Path, metavar="REGISTRY_DIR", help="the registry directory (holds index.sqlite)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("list", help="print the lineage tree and the champion")
    show = commands.add_parser("show", help="print one version's record and the gate's decisions about it")
    show.add_argument("version")
    promote = commands.add_parser("promote", help="make VERSION the champion (overrides a rejection)")
    promote.add_argument("version")
    promote.add_argument("--reason", default="promoted by hand", help="recorded in the champion history")
    rollback = commands.add_parser("rollback", help="restore the champion that the current one replaced")
    rollback.add_argument("--reason", default="rolled back by hand", help="recorded in the champion history")
    export = commands.add_parser(
        "export", help="start a new registry at --to whose champion (v1) is VERSION, to serve first"
    )
    export.add_argument("version")
    export.add_argument("--to", type=Path, required=True, help="the new registry's directory")
    rollouts = commands.add_parser("rollouts", help="the live rollouts asked for and their decisions")
    rollouts.add_argument("--json", action="store_true", help="print them as JSON lines")
    return parser


def _list(registry: Registry) -> None:
    print(registry.lineage_tree() or "(no versions)")
    print(f"champion: {registry.champion() or 'none'}")


def _show(registry: Registry, version: str) -> None:
    record = asdict(registry.get(version))
    for name, value in record.items():
        if isinstance(value, dict) and value:
            print(f"{name}:")
            print("  " + json.dumps(value, indent=2, sort_keys=True).replace("\n", "\n  "))
        else:
            print(
                f"{name}: {json.dumps(value) if isinstance(value, dict | list) or value is None else value}"
            )
    decisions = registry.decisions(version)
    print("decisions:" if decisions else "decisions: none")
    for d in decisions:
        numbers = json.dumps(d["numbers"], sort_keys=True)
        print(f"  window {d['window']}  {d['decision']}  {numbers}  ({d['at']})")
    history = registry.champion_history(version)
    if history:
        print("champion history:")
        for h in history:
            change = f"{h['previous'] or '-'} -> {h['version']}"
            reason = f"  {h['reason']}" if h["reason"] else ""
            print(f"  {h['action']}: {change}  window {h['window']}{reason}  ({h['at']})")


def _promote(registry: Registry, version: str, reason: str) -> None:
    before = registry.get(version).status
    if before == "champion":
        print(f"{version} is already the champion")
        return
    # The files are checked before the index changes: a server following the registry would
    # refuse a damaged champion and go on serving the old one while the index says otherwise.
    registry.verify(version)
    previous = registry.promote(version, reason=reason, override=True)
    note = f" (overriding its {before} status)" if before in ("rejected", "rolled_back") else ""
    print(f"promoted {version} to champion{note}")
    if previous is not None:
        print(f"retired {previous}")
    print(describe(registry.get(version)))


def _rollback(registry: Registry, reason: str) -> None:
    current = registry.champion()
    target = registry.rollback_target()
    registry.verify(target)  # as in _promote: never make a version champion that cannot serve
    restored = registry.rollback(reason=reason, expect=(current, target))
    print(f"rolled back {current}; champion is {restored} again")
    print(describe(registry.get(restored)))


def _export(registry: Registry, version: str, to: Path) -> None:
    with registry.export(version, to) as exported:
        print(f"exported {version} to {to} as v1, its champion")
        print(describe(exported.get("v1")))


def _rollouts(registry: Registry, as_json: bool) -> None:
    records = registry.rollouts.all()
    if not records:
        print("(no rollouts)")
    for r in records:
        if as_json:
            print(json.dumps(asdict(r), sort_keys=True))
            continue
        evidence = r.evidence or {}
        p = evidence.get("p_value")
        detail = f"  p={p:.3g}" if isinstance(p, float) else ""
        line = f"{r.id}  {r.kind}  {r.candidate} vs {r.champion}  {r.status}{detail}  {r.reason or ''}"
        print(line.rstrip())


def main(argv: Sequence[str] | None = None) -> int:
    if hasattr(signal, "SIGPIPE"):  # `perennial-registry DIR list | head` ends quietly
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    args = _parser().parse_args(argv)
    try:
        # create=False: a mistyped path must not leave an empty registry behind; and looking only
        # reads, so list and show work on a registry this user may not write.
        readonly = args.command in ("list", "show", "export", "rollouts")
        registry = Registry(args.registry, create=False, readonly=readonly)
    except FileNotFoundError:
        print(f"no registry at {args.registry}", file=sys.stderr)
        return 2
    except RegistryIndexError as err:
        print(str(err), file=sys.stderr)
        return 2
    except sqlite3.OperationalError as err:
        print(f"registry at {args.registry} is busy: {err}", file=sys.stderr)
        return 1
    try:
        registry.check()
        if args.command == "list":
            _list(registry)
        elif args.command == "show":
            _show(registry, args.version)
        elif args.command == "promote":
            _promote(registry, args.version, args.reason)
        elif args.command == "rollback":
            _rollback(registry, args.reason)
        elif args.command == "export":
            _export(registry, args.version, args.to)
        elif args.command == "rollouts":
            _rollouts(registry, args.json)
    except (UnknownVersion, RegistryIndexError) as err:
        print(str(err), file=sys.stderr)
        return 2
    except ValueError as err:  # a refused change, e.g. a version whose files are damaged
        print(str(err), file=sys.stderr)
        return 1
    except sqlite3.OperationalError as err:
        # Most likely the training loop holds the write lock; a retry later will do.
        print(f"registry at {args.registry} is busy: {err}", file=sys.stderr)
        return 1
    except sqlite3.DatabaseError as err:  # a page damaged past what the open-time check read
        print(str(RegistryIndexError(registry.index, str(err))), file=sys.stderr)
        return 2
    finally:
        registry.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

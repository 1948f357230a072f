"""`h100fleet stack ...`: the stack tool's commands (argparse wiring over lock, rules, diff)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from h100fleet.stack import diff as stack_diff
from h100fleet.stack import lock as stack_lock
from h100fleet.stack import manifest, rules, wheelhouse
from h100fleet.stack.index import DEFAULT_INDEX, PyPIIndex, RecordedIndex, RecordingIndex

DEFAULT_STACKS = Path(__file__).resolve().parents[3] / "files" / "stacks"


def _stack(args: argparse.Namespace, ref: str) -> manifest.Stack:
    """A stack by id (under --stacks) or by directory path."""
    path = Path(ref)
    if not (path / "manifest.yml").is_file():
        path = Path(args.stacks) / ref
    if not (path / "manifest.yml").is_file():
        known = ", ".join(sorted(manifest.discover(Path(args.stacks)))) if Path(args.stacks).is_dir() else "none"
        raise ValueError(f"no stack {ref!r}: not a stack directory and not an id under {args.stacks} (ids: {known})")
    return manifest.load(path)


def _index(args: argparse.Namespace):
    if args.recorded:
        return RecordedIndex(Path(args.recorded))
    index = PyPIIndex(args.index_url)
    return RecordingIndex(index, Path(args.record)) if args.record else index


def cmd_list(args: argparse.Namespace) -> int:
    for stack_id, stack in manifest.discover(Path(args.stacks)).items():
        locks = ", ".join(f"py{p}:{h[:12]}" for p, h in stack.lock_hashes().items()) or "not locked"
        print(
            f"{stack_id}: Python {', '.join(stack.python)}; driver >= {stack.min_driver}; "
            f"CUDA {stack.cuda_runtime}; {locks}"
        )
    return 0


def cmd_lock(args: argparse.Namespace) -> int:
    stack = _stack(args, args.stack)
    for python, path in stack_lock.lock(stack).items():
        print(f"{stack.id}: Python {python} -> {path}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    stack = _stack(args, args.stack)
    errors = None if args.offline else stack_lock.resolve_errors(stack)
    findings = rules.check(stack, _index(args), errors)
    if args.json:
        print(json.dumps([f.to_json() for f in findings], indent=1))
    else:
        for finding in findings:
            print(finding)
        n_err = sum(f.severity == rules.ERROR for f in findings)
        n_warn = len(findings) - n_err
        verdict = "FAILS" if n_err else "passes"
        print(
            f"{stack.id}: {verdict} ({n_err} errors, {n_warn} warnings; Python {', '.join(stack.python)}"
            f"{'; resolution not run (--offline)' if args.offline else ''})"
        )
    return 1 if any(f.severity == rules.ERROR for f in findings) else 0


def cmd_diff(args: argparse.Namespace) -> int:
    result = stack_diff.diff(_stack(args, args.old), _stack(args, args.new), args.python)
    print(json.dumps(result.to_json(), indent=1) if args.json else result.render(), end="" if not args.json else "\n")
    return 0


def cmd_wheelhouse(args: argparse.Namespace) -> int:
    stack = _stack(args, args.stack)
    pythons = args.python or stack.python
    failed = False
    for python in pythons:
        lock = stack.lock_path(python)
        if not lock.is_file():
            raise ValueError(f"{stack.id} has no lock for Python {python} (it has {', '.join(stack.python)})")
        report = wheelhouse.fill(lock.read_text(), python, Path(args.dest), PyPIIndex(args.index_url))
        print(
            f"{stack.id} py{python}: {len(report['downloaded'])} downloaded, {len(report['present'])} present, "
            f"{len(report['missing'])} missing -> {args.dest}"
        )
        for line in report["missing"]:
            print(f"  missing: {line}")
        failed |= bool(report["missing"])
    return 1 if failed else 0


def add_parser(sub) -> None:
    st = sub.add_parser("stack", help="pinned ML stacks: list, lock, check, diff")
    st.add_argument("--stacks", default=str(DEFAULT_STACKS), help="directory of stack directories")
    st_sub = st.add_subparsers(dest="action", required=True)

    p = st_sub.add_parser("list", help="the stacks, their Python versions, driver and lock hashes")
    p.set_defaults(func=cmd_list)

    p = st_sub.add_parser("lock", help="uv pip compile --generate-hashes, per Python version, with the date cutoff")
    p.add_argument("stack", help="stack id or directory")
    p.set_defaults(func=cmd_lock)

    p = st_sub.add_parser("check", help="the compatibility rules; exit 1 on any error")
    p.add_argument("stack", help="stack id or directory")
    p.add_argument(
        "--offline",
        action="store_true",
        help="skip the resolver run (the other rules still need answers from the index or --recorded)",
    )
    p.add_argument("--index-url", default=DEFAULT_INDEX, help="PEP 691 simple index (default: PyPI)")
    p.add_argument("--recorded", help="answer index queries from a recorded directory instead of the network")
    p.add_argument("--record", help="record the index's answers into this directory (test fixtures)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_check)

    p = st_sub.add_parser(
        "wheelhouse", help="download a lock's wheels (hash-checked) for python_stack_source: wheelhouse"
    )
    p.add_argument("stack", help="stack id or directory")
    p.add_argument("--dest", required=True, help="directory to fill")
    p.add_argument("--python", action="append", help="Python version (repeatable; default: all of the stack's)")
    p.add_argument("--index-url", default=DEFAULT_INDEX)
    p.set_defaults(func=cmd_wheelhouse)

    p = st_sub.add_parser("diff", help="what a bump from OLD to NEW changes, and whether nodes must reboot")
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--python", help="compare the locks of this Python version (default: newest common)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_diff)

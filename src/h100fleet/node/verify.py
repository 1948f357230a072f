"""Node side: does this interpreter hold exactly a lock's packages, and do the stack's modules import?

Runs with the stack venv's own python (``python -m h100fleet.node.verify --lock FILE --import torch ...``), standard
library only. Prints one JSON document; exits 0 when everything matches, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata as md
import json
import sys
import time
from pathlib import Path

from h100fleet.node.lockfile import normalize, parse_pins


def installed() -> dict[str, str]:
    """Each distribution's version as the interpreter imports it: the first one on sys.path wins."""
    found: dict[str, str] = {}
    for dist in md.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(normalize(name), dist.version)
    return found


def compare(lock_text: str, have: dict[str, str], ignore_local: bool = False) -> dict:
    """Pins the environment lacks, holds at another version, and (for the record) what it has beyond the lock."""
    pins = parse_pins(lock_text)
    missing, mismatched, local = [], {}, {}
    for key, pin in sorted(pins.items()):
        version = have.get(key)
        if version is None:
            missing.append(str(pin))
        elif version != pin.version:
            if ignore_local and version.split("+", 1)[0] == pin.version:
                local[key] = version
            else:
                mismatched[key] = {"lock": pin.version, "installed": version}
    extra = sorted(k for k in have if k not in pins)
    return {"pins": len(pins), "missing": missing, "mismatched": mismatched, "local_builds": local, "extra": extra}


def try_imports(modules: list[str]) -> dict:
    """Import each module in order (Unsloth wants to come first); whatever they print goes to stderr."""
    results = {}
    for module in modules:
        start = time.perf_counter()
        try:
            with contextlib.redirect_stdout(sys.stderr):
                imported = importlib.import_module(module)
            results[module] = {
                "ok": True,
                "version": str(getattr(imported, "__version__", "")),
                "seconds": round(time.perf_counter() - start, 2),
            }
        except Exception as exc:
            results[module] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m h100fleet.node.verify", description=__doc__)
    parser.add_argument("--lock", required=True, type=Path, help="the stack's lock file for this Python")
    parser.add_argument("--import", dest="imports", action="append", default=[], help="module to import (repeatable)")
    parser.add_argument(
        "--ignore-local",
        action="store_true",
        help="accept a local build of a pinned release (2.11.0+cu130 for 2.11.0), reported apart",
    )
    parser.add_argument(
        "--allow-extra",
        action="append",
        default=[],
        help="installed distribution beyond the lock that is expected (e.g. h100fleet)",
    )
    parser.add_argument("--json", type=Path, help="write the report here instead of standard output")
    args = parser.parse_args(argv)
    report = compare(args.lock.read_text(), installed(), args.ignore_local)
    report["extra"] = [e for e in report["extra"] if e not in {normalize(a) for a in args.allow_extra}]
    report["python"] = sys.version.split()[0]
    report["imports"] = try_imports(args.imports)
    report["ok"] = (
        not report["missing"] and not report["mismatched"] and all(r["ok"] for r in report["imports"].values())
    )
    text = json.dumps(report, indent=1, sort_keys=True)
    if args.json:
        args.json.write_text(text + "\n")
    else:
        print(text)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""The package's layers: which code runs where, and which layer may import which.

- ``node``: runs on the nodes, in a stack venv (probes, trainer, stack verification) or by the node's system Python
  (the hardware fact, the rollout guard). These are the only modules copied into stack venvs (python_stack's
  package task reads NODE_PACKAGES), so they import nothing from the other layers.
- ``control``: runs on the control node (the rollout's decisions, the fleet's reports, stack manifests, locks and
  compatibility rules, the role filter plugins' logic). It may import node modules (the probes' driver table, the
  lock file format) and nothing from the harness.
- ``harness``: tests and benchmarks (the local test fleet, testinfra helpers, the benchmarks' logic, the GPU machine
  transfer). May import anything; never shipped to a node.
- ``entry``: the ``h100fleet`` command line, whose subcommands reach control and harness code. Nothing imports it.

A module belongs to the layer that lists it or a package above it; tests/unit/test_layers.py checks, from the
source and without importing it, that every module belongs to exactly one layer and that imports follow ALLOWED.
"""

from __future__ import annotations

ROOT = "h100fleet"

LAYERS: dict[str, tuple[str, ...]] = {
    # The root package itself (its __init__ only) ships with the node code that needs it to be importable.
    "node": (ROOT, "h100fleet.node", "h100fleet.probes", "h100fleet.trainer"),
    "control": ("h100fleet._proc", "h100fleet.fleet", "h100fleet.layers", "h100fleet.stack"),
    "harness": ("h100fleet.harness", "h100fleet.testfleet"),
    "entry": ("h100fleet.cli",),
}

# Which layers each layer may import from (its own included).
ALLOWED: dict[str, frozenset[str]] = {
    "node": frozenset({"node"}),
    "control": frozenset({"node", "control"}),
    "harness": frozenset({"node", "control", "harness"}),
    "entry": frozenset({"node", "control", "harness"}),
}

# The subpackages copied into every stack venv, besides the root package's __init__.py.
NODE_PACKAGES: tuple[str, ...] = tuple(name.split(".", 1)[1] for name in LAYERS["node"] if name != ROOT)


def _covers(entry: str, module: str) -> bool:
    # The root entry names the root package only, not everything below it.
    return module == entry or (entry != ROOT and module.startswith(entry + "."))


def layers_of(module: str) -> list[str]:
    """Every layer that lists the module or a package above it (exactly one for a well-placed module)."""
    return [layer for layer, entries in LAYERS.items() if any(_covers(e, module) for e in entries)]


def layer_of(module: str) -> str:
    """The one layer of a module of the package; ValueError naming the module when it has none or several."""
    found = layers_of(module)
    if len(found) != 1:
        where = ", ".join(found) if found else "no layer"
        raise ValueError(f"module {module} belongs to {where}; it must belong to exactly one of {', '.join(LAYERS)}")
    return found[0]

"""The package's layers (h100fleet.layers), read from the source with ast, never by importing it: every module in
exactly one layer, node-side code importing nothing from the control node or the harness, control-node code nothing
from the harness; stack venvs get the node side only; every command is listed in `h100fleet --help`."""

from __future__ import annotations

import ast
import io
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from h100fleet import cli, layers

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
PACKAGE = SRC / "h100fleet"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_sources() -> dict[str, tuple[Path, str]]:
    """Every module of the package: name -> (file, source)."""
    return {module_name(p): (p, p.read_text()) for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(module: str, source: str, is_package: bool, known: set[str]) -> set[str]:
    """The package's modules that a module's source imports, anywhere in it (function bodies included): `import
    a.b`, `from a import b` (a.b when that is a module, else a) and relative imports, resolved."""
    found: set[str] = set()
    here = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {name for name in found if name == layers.ROOT or name.startswith(layers.ROOT + ".")}


def violations(sources: dict[str, tuple[Path, str]]) -> list[str]:
    """Each import that crosses the layers the wrong way, or names no module of the package, as one line."""
    known = set(sources)
    problems = []
    for module, (path, source) in sorted(sources.items()):
        layer = layers.layer_of(module)
        for target in sorted(imported_modules(module, source, path.name == "__init__.py", known)):
            if target not in known:
                problems.append(f"{module} ({layer}) imports {target}, which is no module of the package")
                continue
            target_layer = layers.layer_of(target)
            if target_layer not in layers.ALLOWED[layer]:
                allowed = ", ".join(sorted(layers.ALLOWED[layer]))
                problems.append(f"{module} ({layer}) imports {target} ({target_layer}); {layer} may import {allowed}")
    return problems


SOURCES = package_sources()


@pytest.mark.parametrize("module", sorted(SOURCES))
def test_every_module_belongs_to_exactly_one_layer(module):
    assert len(layers.layers_of(module)) == 1, f"{module}: in {layers.layers_of(module) or 'no layer'}"


def test_every_layer_entry_names_modules_that_exist():
    for layer, entries in layers.LAYERS.items():
        for entry in entries:
            assert entry in SOURCES, f"layer {layer} lists {entry}, which is no module or package of h100fleet"


def test_a_module_in_no_layer_or_in_two_is_refused_by_name(monkeypatch):
    with pytest.raises(ValueError, match=r"module h100fleet\.newpkg\.x belongs to no layer"):
        layers.layer_of("h100fleet.newpkg.x")
    monkeypatch.setitem(layers.LAYERS, "harness", (*layers.LAYERS["harness"], "h100fleet.probes.nvml"))
    with pytest.raises(ValueError, match=r"h100fleet\.probes\.nvml belongs to node, harness"):
        layers.layer_of("h100fleet.probes.nvml")


def test_imports_follow_the_layers():
    problems = violations(SOURCES)
    assert not problems, "imports that cross the layers:\n" + "\n".join(problems)


def _with(module: str, source: str) -> dict[str, tuple[Path, str]]:
    name = "__init__.py" if module in SOURCES and SOURCES[module][0].name == "__init__.py" else "new.py"
    return {**SOURCES, module: (PACKAGE / name, source)}


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        # node -> control, in each import form, lazily in a function too
        ("h100fleet.probes.new", "from h100fleet.fleet import rollout\n", "imports h100fleet.fleet.rollout (control)"),
        ("h100fleet.probes.new", "import h100fleet.stack.manifest\n", "imports h100fleet.stack.manifest (control)"),
        ("h100fleet.trainer.new", "def f():\n    from h100fleet.stack.rules import check\n", "h100fleet.stack.rules"),
        ("h100fleet.probes.new", "from ..fleet import summary\n", "imports h100fleet.fleet.summary (control)"),
        ("h100fleet.node.new", "from h100fleet import layers\n", "imports h100fleet.layers (control)"),
        # node -> harness, control -> harness, anything -> the command line
        ("h100fleet.trainer.new", "from h100fleet.harness import train_bench\n", "(harness); node may import node"),
        ("h100fleet.fleet.new", "from h100fleet.testfleet.nodes import up\n", "(harness); control may import"),
        ("h100fleet.harness.new", "from h100fleet.cli import main\n", "imports h100fleet.cli (entry)"),
        # an import of something that is not there
        ("h100fleet.fleet.new", "from h100fleet.fleet.nothere import x\n", "which is no module of the package"),
    ],
)
def test_a_wrong_import_is_reported_by_module(module, source, expected):
    problems = violations(_with(module, source))
    assert any(p.startswith(module) and expected in p for p in problems), problems


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("h100fleet.probes.new", "from h100fleet.node.lockfile import parse_pins\nfrom . import checks\n"),
        ("h100fleet.fleet.new", "from h100fleet.probes import drivers\nfrom h100fleet.fleet import markdown_table\n"),
        ("h100fleet.harness.new", "from h100fleet.stack import manifest\nfrom h100fleet.trainer import tiny\n"),
        ("h100fleet.trainer.new", "import json\nimport torch\n"),
    ],
)
def test_an_allowed_import_is_not_reported(module, source):
    assert violations(_with(module, source)) == []


# --- what a stack venv gets -------------------------------------------------------------------------------------


def pack_script() -> str:
    tasks = yaml.safe_load((REPO / "roles/python_stack/tasks/package.yml").read_text())
    (task,) = [t for t in tasks if t["name"] == "Package | Pack the h100fleet package on the control node"]
    argv = task["ansible.builtin.command"]["argv"]
    assert argv[1] == "-c"
    return argv[2]


@pytest.fixture(scope="module")
def venv_archive(tmp_path_factory) -> bytes:
    """The archive python_stack copies into every stack venv, built by the role's own task code."""
    out = tmp_path_factory.mktemp("pack") / "package.tar.gz"
    subprocess.run([sys.executable, "-c", pack_script(), str(PACKAGE), str(out)], check=True, cwd="/")
    return out.read_bytes()


def test_stack_venvs_get_the_node_side_only(venv_archive):
    with tarfile.open(fileobj=io.BytesIO(venv_archive)) as tar:
        members = set(tar.getnames())
    node_files = {
        "h100fleet/" + path.relative_to(PACKAGE).as_posix()
        for module, (path, _) in SOURCES.items()
        if layers.layer_of(module) == "node"
    }
    assert members == node_files
    for needed in ("h100fleet/__init__.py", "h100fleet/probes/run.py", "h100fleet/trainer/tiny.py"):
        assert needed in members
    assert "h100fleet/node/verify.py" in members and "h100fleet/node/lockfile.py" in members
    shipped_elsewhere = [m for m in members if m.split("/")[1] in ("harness", "testfleet", "fleet", "stack", "cli.py")]
    assert shipped_elsewhere == []
    assert not any("bench" in m for m in members)


def test_the_venv_archive_is_the_same_every_time(tmp_path, venv_archive):
    out = tmp_path / "again.tar.gz"
    subprocess.run([sys.executable, "-c", pack_script(), str(PACKAGE), str(out)], check=True, cwd="/")
    assert out.read_bytes() == venv_archive


# --- the command list --------------------------------------------------------------------------------------------


def _runnable(module: str) -> bool:
    if module in SOURCES and SOURCES[module][0].name == "__init__.py":
        main = SOURCES[module][0].parent / "__main__.py"
        return main.is_file()
    return module in SOURCES and '__name__ == "__main__"' in SOURCES[module][1]


@pytest.mark.parametrize("module", [name for name, _ in cli.MODULES])
def test_each_listed_module_exists_and_runs_as_main(module):
    assert _runnable(module), f"{module}: no such module, or it has no __main__"


@pytest.mark.parametrize("path", [p for p, _ in cli.NODE_PROGRAMS + cli.SCRIPTS])
def test_each_listed_program_exists(path):
    file = REPO / path
    assert file.is_file(), path
    if path.startswith(("scripts/", "src/h100fleet/node/facts.py")):
        assert os.access(file, os.X_OK), f"{path} is not executable"


RUN_AS_MODULE = re.compile(r"""-m['"]?,?\s*['"]?(h100fleet(?:\.[a-z_]+)*)""")


def test_every_module_the_repository_runs_is_listed():
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    listed = {name for name, _ in cli.MODULES}
    seen: dict[str, str] = {}
    for rel in tracked.splitlines():
        if rel.endswith((".json", ".lock", ".txt")) or not (REPO / rel).is_file():
            continue
        for match in RUN_AS_MODULE.finditer((REPO / rel).read_text(errors="replace")):
            seen.setdefault(match.group(1), rel)
    assert "h100fleet.node.verify" in seen and "h100fleet.trainer" in seen  # the scan finds what it looks for
    unlisted = {module: where for module, where in seen.items() if module not in listed}
    assert not unlisted, f"run as `python -m` but not in h100fleet.cli.MODULES: {unlisted}"


def test_every_user_script_is_listed():
    listed = {path for path, _ in cli.SCRIPTS}
    scripts = [p for p in (REPO / "scripts").rglob("*") if p.is_file() and (REPO / "scripts/lib") not in p.parents]
    on_disk = {p.relative_to(REPO).as_posix() for p in [*scripts, *(REPO / "benchmarks").glob("*.py")]}
    assert on_disk == listed


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for name, _ in cli.MODULES + cli.NODE_PROGRAMS + cli.SCRIPTS:
        assert name in out

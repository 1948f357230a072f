"""Every role documents its inputs: argument_specs and defaults/main.yml agree, OS variable files agree."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLES = sorted(p for p in (REPO / "roles").iterdir() if p.is_dir())


def load(path: Path):
    return yaml.safe_load(path.read_text()) or {}


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_argument_specs_match_defaults(role):
    defaults = load(role / "defaults" / "main.yml")
    options = load(role / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    # The fleet pins (h100fleet_*) are documented in fleet_preflight's specs and set only by inventories.
    pins = {name for name in options if name.startswith("h100fleet_")}
    assert not pins or role.name == "fleet_preflight", f"{role.name} declares fleet pins: {sorted(pins)}"
    assert set(defaults) == set(options) - pins, (
        "defaults/main.yml and meta/argument_specs.yml list different variables"
    )
    for name, spec in options.items():
        assert spec.get("description"), f"{role.name}: {name} has no description"
        assert name in pins or spec.get("default") == defaults[name], f"{role.name}: {name} default differs"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_public_variables_carry_the_role_prefix(role):
    defaults = load(role / "defaults" / "main.yml")
    assert all(name.startswith(f"{role.name}_") for name in defaults)
    internal = load(role / "vars" / "main.yml") if (role / "vars" / "main.yml").exists() else {}
    assert all(name.startswith(f"__{role.name}_") for name in internal)


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_os_variable_files_define_the_same_names(role):
    keysets = {p.name: set(load(p)) for p in sorted(role.glob("vars/*.yml")) if p.name != "main.yml"}
    if keysets:
        first = next(iter(keysets.values()))
        assert all(keys == first for keys in keysets.values()), keysets


# Local facts are JSON documents, which have no comments.
CONFIG_TEMPLATES = sorted(p for p in (REPO / "roles").glob("*/templates/*.j2") if not p.name.endswith(".fact.j2"))


@pytest.mark.parametrize("template", CONFIG_TEMPLATES, ids=lambda p: f"{p.parts[-3]}/{p.name}")
def test_config_templates_say_they_are_managed(template):
    assert template.read_text().startswith("{{ ansible_managed | comment }}")

"""python_stack refuses a stack the node cannot run before it changes anything, and says why."""

from __future__ import annotations

import pytest
from helpers import flat, run_preflight

DEFAULT = "torch2.3-unsloth2024.8-py310"
CURRENT = "torch2.11-unsloth2026.10-py312"


def python(version: str) -> dict:
    major, minor = version.split(".")
    return {"python": {"version": {"major": int(major), "minor": int(minor)}, "executable": "/usr/bin/python3"}}


def driver(version: str | None) -> dict:
    return {"ansible_local": {"h100fleet_driver": {"installed_version": version}} if version else {}}


def preflight(extra: dict, py: str = "3.11", drv: str | None = None):
    return run_preflight("preflight-python_stack.yml", "python_stack_preflight", extra, {**python(py), **driver(drv)})


def chosen(result) -> dict[str, str]:
    """What the preflight chose (interpreter, venv, uv_managed), from the test playbook's last line."""
    text = flat(result)
    assert result.returncode == 0, text
    words = text.split("CHOSEN ", 1)[1].split()[:3]
    return dict(w.split("=", 1) for w in words)


@pytest.mark.parametrize(
    ("stack", "py", "drv", "interpreter"),
    [
        (DEFAULT, "3.10", "550.163.01", "/usr/bin/python3.10"),  # Ubuntu 22.04
        (DEFAULT, "3.11", None, "/usr/bin/python3.11"),  # Debian 12, no driver yet
        (CURRENT, "3.12", "580.95.05", "/usr/bin/python3.12"),  # Ubuntu 24.04
    ],
)
def test_supported_nodes_pass_and_get_the_distribution_python(stack, py, drv, interpreter):
    result = preflight({"python_stack_id": stack, "python_stack_root": "/opt/s"}, py, drv)
    got = chosen(result)
    assert got["interpreter"] == interpreter and got["uv_managed"] == "False"
    assert got["venv"].startswith(f"/opt/s/{stack}-py{py}-")


def test_unknown_stack_lists_the_known_ones():
    result = preflight({"python_stack_id": "torch9-nope"})
    assert result.returncode != 0
    text = flat(result)
    assert "python_stack_id 'torch9-nope' is not a stack in" in text
    assert DEFAULT in text and CURRENT in text


def test_python_without_a_lock_needs_a_mirror():
    result = preflight({"python_stack_id": DEFAULT}, py="3.13")
    assert result.returncode != 0
    assert (
        "Stack torch2.3-unsloth2024.8-py310 has locks for Python 3.10, 3.11; localhost has Python 3.13. "
        "Set python_stack_uv_python_mirror" in flat(result)
    )


def test_python_without_a_lock_uses_a_uv_managed_interpreter_from_the_mirror():
    result = preflight(
        {"python_stack_id": DEFAULT, "python_stack_uv_python_mirror": "https://mirror.example/pbs"}, "3.13"
    )
    got = chosen(result)
    assert got["interpreter"] == "cpython-3.10" and got["uv_managed"] == "True"
    assert f"/{DEFAULT}-py3.10-" in got["venv"]


def test_driver_too_old_for_the_stack_is_refused():
    result = preflight({"python_stack_id": CURRENT}, "3.12", "550.163.01")
    assert result.returncode != 0
    assert (
        "Stack torch2.11-unsloth2026.10-py312 needs NVIDIA driver >= 580.65.06 (its wheels bring CUDA 13.0); "
        "localhost has driver 550.163.01" in flat(result)
    )


def test_loaded_module_counts_when_nvidia_driver_did_not_install_it():
    facts = {**python("3.12"), "ansible_local": {"h100fleet_node": {"nvidia_module_version": "570.86.15"}}}
    result = run_preflight("preflight-python_stack.yml", "python_stack_preflight", {"python_stack_id": CURRENT}, facts)
    assert result.returncode != 0 and "has driver 570.86.15" in flat(result)


def test_explicit_interpreter_picks_its_lock():
    result = preflight({"python_stack_id": CURRENT, "python_stack_python": "/opt/py/bin/python3.11"}, "3.13")
    got = chosen(result)
    assert got["interpreter"] == "/opt/py/bin/python3.11"
    assert f"/{CURRENT}-py3.11-" in got["venv"]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"python_stack_keep": 1}, "python_stack_keep is '1'; expected at least 2 (current and previous"),
        ({"python_stack_root": "opt/stacks"}, "python_stack_root is 'opt/stacks'; expected an absolute path"),
        ({"python_stack_python": "python3"}, "python_stack_python is 'python3'; expected auto or the absolute path"),
        ({"python_stack_source": "wheelhouse"}, "python_stack_source is wheelhouse: set python_stack_wheelhouse_dir"),
        ({"python_stack_source": "conda"}, "python_stack_source"),
        ({"python_stack_python": "/usr/bin/python3.9"}, "has no lock for Python 3.9"),
    ],
    ids=["keep", "root", "python", "wheelhouse", "source", "no-lock"],
)
def test_bad_settings_are_refused_by_name(extra, expected):
    result = preflight({"python_stack_id": DEFAULT, **extra})
    assert result.returncode != 0
    assert expected in flat(result)


def test_every_problem_is_reported_at_once():
    settings = {"python_stack_id": CURRENT, "python_stack_keep": 1, "python_stack_source": "wheelhouse"}
    result = preflight(settings, "3.12", "550.163.01")
    text = flat(result)
    assert result.returncode != 0, text
    assert "fatal: [localhost]" in text
    for expected in [
        "python_stack_keep is '1'; expected at least 2",
        "python_stack_source is wheelhouse: set python_stack_wheelhouse_dir",
        f"Stack {CURRENT} needs NVIDIA driver >= 580.65.06",
    ]:
        assert expected in text, (expected, text)
    assert "changed=0" in text


def test_an_unknown_stack_skips_the_checks_that_need_its_manifest():
    result = preflight({"python_stack_id": "torch9-nope", "python_stack_root": "opt/stacks"})
    text = flat(result)
    assert result.returncode != 0, text
    assert "python_stack_id 'torch9-nope' is not a stack in" in text
    assert "python_stack_root is 'opt/stacks'; expected an absolute path" in text
    # The manifest is not read, so nothing that needs it fails: no internal error, no lock looked for.
    assert "has no lock" not in text and "Could not find" not in text

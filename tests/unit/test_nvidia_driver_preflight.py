"""nvidia_driver refuses what would break a node before it changes anything, and says why."""

from __future__ import annotations

import json
import subprocess
from datetime import date

import pytest
from helpers import GOOD_FACTS, KERNEL_HEADERS, REPO, ansible_env, flat, run_preflight

from h100fleet.probes import drivers


def preflight(extra: dict, facts: dict | None = None):
    extra = {"__nvidia_driver_modules_dir": KERNEL_HEADERS, **extra}
    return run_preflight("preflight-nvidia_driver.yml", "nvidia_driver_preflight", extra, facts)


def node_fact(**fields) -> dict:
    base = {"gpu_count": 8, "nvswitch_count": 0, "secure_boot": "disabled", "nvidia_module_loaded": False}
    return {"ansible_local": {"h100fleet_node": {**base, **fields}}}


def test_debian_13_with_defaults_passes():
    result = preflight(node_fact())
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("version", ["550", "550.163.01", "550.54.15", "560"])
def test_versions_that_can_run_cuda_12_4_pass(version):
    result = preflight({"nvidia_driver_version": version, **node_fact()})
    assert result.returncode == 0, flat(result)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            {"nvidia_driver_version": "535"},
            "nvidia_driver_version 535 cannot run CUDA 12.4, which needs a driver >= 550.54.15",
        ),
        ({"nvidia_driver_version": "550.54.14"}, "nvidia_driver_version 550.54.14 cannot run CUDA 12.4"),
        ({"nvidia_driver_version": "550.x"}, "nvidia_driver_version is '550.x'; expected a branch"),
        ({"nvidia_driver_cuda_version": "12.7"}, "nvidia_driver_cuda_version is '12.7'; expected one of"),
        ({"nvidia_driver_module_flavor": "nouveau"}, "nvidia_driver_module_flavor"),
        ({"nvidia_driver_reboot": "sometimes"}, "nvidia_driver_reboot"),
    ],
    ids=["branch-535", "too-old-exact", "bad-version", "unknown-cuda", "bad-flavor", "bad-reboot-policy"],
)
def test_bad_settings_are_refused_by_name(extra, expected):
    result = preflight({**extra, **node_fact()})
    assert result.returncode != 0
    assert expected in flat(result)


def test_secure_boot_without_a_signing_key_is_refused():
    result = preflight(node_fact(secure_boot="enabled"))
    assert result.returncode != 0
    assert "Secure Boot is enabled on localhost and no module-signing key is configured" in flat(result)


def test_secure_boot_with_a_signing_key_passes():
    keys = {
        "nvidia_driver_signing_key": "/var/lib/shim-signed/mok/MOK.priv",
        "nvidia_driver_signing_cert": "/var/lib/shim-signed/mok/MOK.der",
    }
    result = preflight({**keys, **node_fact(secure_boot="enabled")})
    assert result.returncode == 0, flat(result)


def test_nvswitch_node_needs_fabric_manager_which_debian_lacks():
    result = preflight(node_fact(nvswitch_count=4))
    assert result.returncode != 0
    assert "has 4 NVSwitches (nvidia_driver_fabricmanager is auto)" in flat(result)
    assert "which Debian does not package (nvidia_driver_source is debian)" in flat(result)


def test_nvswitch_node_may_skip_fabric_manager_explicitly():
    result = preflight({"nvidia_driver_fabricmanager": "never", **node_fact(nvswitch_count=4)})
    assert result.returncode == 0, flat(result)


@pytest.mark.parametrize(
    "facts",
    [
        {"distribution": "Debian", "distribution_version": "12.8", "distribution_major_version": "12"},
        {"distribution": "Ubuntu", "distribution_version": "22.04", "distribution_major_version": "22"},
        {
            "distribution": "Rocky",
            "distribution_version": "9.4",
            "distribution_major_version": "9",
            "os_family": "RedHat",
        },
    ],
    ids=["debian-12", "ubuntu-22.04", "rocky-9"],
)
def test_nodes_served_by_nvidias_repository_pass_even_with_nvswitches(facts):
    result = preflight(node_fact(nvswitch_count=4), facts)
    assert result.returncode == 0, flat(result)


def test_unsupported_os_is_refused_by_name():
    facts = {"distribution": "Fedora", "distribution_version": "40", "distribution_major_version": "40"}
    result = preflight(node_fact(), {**facts, "os_family": "RedHat"})
    assert result.returncode != 0
    assert "localhost runs Fedora 40, which nvidia_driver does not support (nvidia_driver_source is auto)" in flat(
        result
    )


def test_default_550_passes_with_a_warning_that_names_the_supported_branches():
    """R550 is no longer supported by NVIDIA: the preflight warns (names the supported branches) and goes on."""
    result = preflight(node_fact())
    assert result.returncode == 0, flat(result)
    supported = drivers.lifecycle("550", date.today())["supported"]
    assert (
        "WARNING: localhost: nvidia_driver_version 550.163.01: driver branch R550 is no longer supported by NVIDIA"
        in flat(result)
    )
    assert all(f"R{branch}" in flat(result) for branch in supported)


@pytest.mark.parametrize("version", ["580", "580.159.04"])
def test_580_passes_on_debian_13_through_nvidias_repository(version):
    result = preflight({"nvidia_driver_version": version, "nvidia_driver_cuda_version": "13.0", **node_fact()})
    assert result.returncode == 0, flat(result)
    # auto takes NVIDIA's debian13 repository for a branch Debian's archive does not carry: its preflight ran.
    assert "Preflight | Check that NVIDIA's repository serves this node" in flat(result)
    warns = drivers.lifecycle(version, date.today())["warning"] != ""
    assert ("WARNING: localhost" in flat(result)) is warns


@pytest.mark.parametrize(
    "play",
    [
        {"roles": ["nvidia_repo"]},
        {"tasks": [{"ansible.builtin.include_role": {"name": "nvidia_repo", "tasks_from": "repository"}}]},
    ],
    ids=["as-a-role", "tasks-from-a-play"],
)
def test_the_internal_repository_role_refuses_to_run_alone(tmp_path, play):
    playbook = tmp_path / "alone.yml"
    playbook.write_text(
        json.dumps([{"name": "Alone", "hosts": "localhost", "connection": "local", "gather_facts": False, **play}])
    )
    env = ansible_env(ANSIBLE_LOCALHOST_WARNING="0")
    extra = json.dumps({"ansible_facts": GOOD_FACTS, "nvidia_repo_base_url": "https://mirror.example.internal/cuda"})
    result = subprocess.run(
        ["ansible-playbook", str(playbook), "-e", extra], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "nvidia_repo is an internal role of nvidia_driver and cuda_toolkit" in flat(result)


def test_every_problem_is_reported_at_once():
    # Branch 535 (NVIDIA's repository on Debian 13) cannot run CUDA 12.4, and Secure Boot has no signing key.
    result = preflight({"nvidia_driver_version": "535", **node_fact(secure_boot="enabled")})
    text = flat(result)
    assert result.returncode != 0, text
    assert "fatal: [localhost]" in text
    assert "nvidia_driver_version 535 cannot run CUDA 12.4" in text
    assert "Secure Boot is enabled on localhost and no module-signing key is configured" in text
    assert "changed=0" in text


def test_a_malformed_version_is_refused_by_name_and_never_reaches_the_driver_table():
    result = preflight(
        {"nvidia_driver_version": "550.x", "nvidia_driver_cuda_version": "12.7", **node_fact(nvswitch_count=4)}
    )
    text = flat(result)
    assert result.returncode != 0, text
    assert "nvidia_driver_version is '550.x'; expected a branch" in text
    assert "nvidia_driver_cuda_version is '12.7'; expected one of" in text
    assert "cannot run CUDA" not in text and "invalid literal" not in text
    # What depends on the version (the source it picks, so the fabric manager's) waits for a valid version.
    assert "NVSwitches" not in text


def test_the_repository_check_of_the_internal_role_adds_to_the_drivers_problems():
    facts = {"distribution": "Fedora", "distribution_version": "40", "distribution_major_version": "40"}
    extra = {"nvidia_driver_nvidia_repo_base_url": "mirror.example/cuda", **node_fact(secure_boot="enabled")}
    result = preflight(extra, {**facts, "os_family": "RedHat"})
    text = flat(result)
    assert result.returncode != 0, text
    assert "nvidia_driver_nvidia_repo_base_url is 'mirror.example/cuda'; expected" in text
    assert "localhost runs Fedora 40, which nvidia_driver does not support" in text
    assert "Secure Boot is enabled on localhost" in text

"""Debian 13's driver module and the kernels DKMS builds it for: the preflight refuses a kernel with headers that
the module does not build for, before anything is installed; the patches the role hands DKMS exist, are listed
once per Debian version, and are unified diffs of the module's source. That they make the module build is shown
by `molecule test -s nvidia_driver` (DKMS builds it there for Debian 13's current kernel)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from helpers import REPO, flat, run_preflight

ROLE = REPO / "roles" / "nvidia_driver"
DKMS_VARS = yaml.safe_load((ROLE / "vars" / "dkms" / "debian13.yml").read_text())
NODE = {"ansible_local": {"h100fleet_node": {"gpu_count": 8, "nvswitch_count": 0, "secure_boot": "disabled"}}}
UBUNTU_2404 = {
    "distribution": "Ubuntu",
    "distribution_version": "24.04",
    "distribution_major_version": "24",
    "distribution_release": "noble",
}
# DKMS module names of Debian 13's packages (dkms.conf PACKAGE_NAME of nvidia-open-kernel-dkms and
# nvidia-kernel-dkms), as vars/debian-Debian.yml names them.
DKMS_MODULE = {"open": "nvidia-current-open", "proprietary": "nvidia-current"}


def modules_dir(tmp_path: Path, *kernels: str, without_headers: tuple[str, ...] = ()) -> Path:
    """A /lib/modules with headers (<release>/build, a link as the headers packages make it) for `kernels`."""
    root = tmp_path / "lib-modules"
    headers = tmp_path / "headers"
    headers.mkdir()
    for kernel in kernels:
        (root / kernel).mkdir(parents=True)
        (root / kernel / "build").symlink_to(headers)
    for kernel in without_headers:
        (root / kernel / "kernel").mkdir(parents=True)
    return root


def preflight(root: Path, extra: dict | None = None, facts: dict | None = None):
    return run_preflight(
        "preflight-nvidia_driver.yml",
        "nvidia_driver_preflight",
        {"__nvidia_driver_modules_dir": str(root), **NODE, **(extra or {})},
        facts,
    )


@pytest.mark.parametrize("flavor", ["open", "proprietary"])
def test_debian_13_kernel_with_headers_passes(tmp_path, flavor):
    root = modules_dir(tmp_path, "6.12.118+deb13-amd64", "6.12.48+deb13-amd64")
    result = preflight(root, {"nvidia_driver_module_flavor": flavor})
    assert result.returncode == 0, flat(result)


def test_a_kernel_without_headers_is_not_built_for_and_passes(tmp_path):
    root = modules_dir(tmp_path, "6.12.118+deb13-amd64", without_headers=("6.16.3+deb13-amd64",))
    result = preflight(root)
    assert result.returncode == 0, flat(result)


@pytest.mark.parametrize("flavor", ["open", "proprietary"])
def test_a_backports_kernel_with_headers_is_refused_by_name(tmp_path, flavor):
    root = modules_dir(tmp_path, "6.12.118+deb13-amd64", "7.3.4+deb13-amd64", "6.16.3+deb13-amd64")
    result = preflight(root, {"nvidia_driver_module_flavor": flavor})
    assert result.returncode != 0
    out = flat(result)
    assert "localhost runs or has the headers of kernel 6.16.3+deb13-amd64, 7.3.4+deb13-amd64" in out
    assert f"Debian 13's {flavor} module of the 550 driver is known to build only for Debian 13's own kernel" in out
    assert "Boot Debian 13's kernel" in out
    assert "6.12.118+deb13-amd64," not in out


def test_a_running_backports_kernel_is_refused_before_its_headers_are_installed(tmp_path):
    root = modules_dir(tmp_path, "6.12.118+deb13-amd64")
    result = preflight(root, facts={"kernel": "6.16.3+deb13-amd64"})
    assert result.returncode != 0
    assert "localhost runs or has the headers of kernel 6.16.3+deb13-amd64," in flat(result)


def test_a_containers_kernel_is_the_hosts_and_is_not_checked(tmp_path):
    root = modules_dir(tmp_path, "6.12.118+deb13-amd64")
    facts = {"kernel": "6.18.44-fc-v669", "virtualization_tech_guest": ["container", "docker"]}
    result = preflight(root, facts=facts)
    assert result.returncode == 0, flat(result)


def test_nodes_on_nvidias_repository_are_not_checked(tmp_path):
    root = modules_dir(tmp_path, "6.17.0-14-generic")
    result = preflight(root, facts=UBUNTU_2404)
    assert result.returncode == 0, flat(result)


def test_each_patch_exists_where_dkms_takes_it_from():
    patches = DKMS_VARS["__nvidia_driver_dkms_patches"]
    assert set(patches) == set(DKMS_MODULE)
    listed = 0
    for flavor, by_version in patches.items():
        for version, files in by_version.items():
            upstream = version.split("-")[0]
            for name in files:
                path = ROLE / "files" / "dkms" / f"{DKMS_MODULE[flavor]}-{upstream}" / name
                assert path.is_file(), f"{flavor} {version}: {path} is missing"
                listed += 1
    assert listed > 0
    on_disk = {p.name for p in (ROLE / "files" / "dkms").rglob("*.patch")}
    assert on_disk == {name for by_version in patches.values() for files in by_version.values() for name in files}


@pytest.mark.parametrize("path", sorted((ROLE / "files" / "dkms").rglob("*.patch")), ids=lambda p: p.name)
def test_patches_are_p1_unified_diffs_of_the_module_source(path):
    text = path.read_text()
    targets = re.findall(r"^\+\+\+ b/(\S+)$", text, flags=re.MULTILINE)
    assert targets, "no file patched"
    assert re.findall(r"^--- a/(\S+)$", text, flags=re.MULTILINE) == targets
    # The module's source tree (kernel-open/ of NVIDIA's open-gpu-kernel-modules, as Debian ships it in /usr/src).
    assert all(t.split("/")[0] in {"conftest.sh", "nvidia", "nvidia-uvm", "nvidia-modeset", "common"} for t in targets)
    assert "@@ " in text

"""What nvidia_driver leaves on a Debian 13 node: the pinned, held driver and its configuration."""

from __future__ import annotations

import json

import pytest

from h100fleet.harness import testinfra

testinfra_hosts = testinfra.hosts()

VERSION = "550.163.01"
DRIVER_PACKAGES = [
    "nvidia-open-kernel-dkms",
    "nvidia-smi",
    "libcuda1",
    "libnvidia-ml1",
    "libnvidia-ptxjitcompiler1",
    "firmware-nvidia-gsp",
    "nvidia-persistenced",
]


@pytest.mark.parametrize("name", DRIVER_PACKAGES)
def test_driver_package_at_the_exact_version_and_held(host, name):
    package = host.package(name)
    assert package.is_installed
    assert package.version.startswith(f"{VERSION}-")
    assert host.check_output(f"dpkg-query --show --showformat='${{db:Status-Abbrev}}' {name}").strip() == "hi"


def test_apt_upgrade_proposes_nothing_nvidia(host):
    host.check_output("apt-get update -qq")
    simulated = host.check_output("apt-get -s upgrade")
    changes = [line for line in simulated.splitlines() if line.startswith(("Inst ", "Remv "))]
    assert not [line for line in changes if "nvidia" in line or "libcuda" in line], changes


def test_pin_keeps_the_candidate_at_the_version(host):
    pref = host.file("/etc/apt/preferences.d/h100fleet-nvidia-driver.pref").content_string
    assert "Package: src:nvidia-graphics-drivers" in pref
    assert "Package: src:nvidia-open-gpu-kernel-modules" in pref
    assert f"Pin: version {VERSION}-*" in pref
    policy = host.check_output("apt-cache policy nvidia-smi")
    assert f"Candidate: {VERSION}-" in policy


def test_no_x_server_on_a_compute_node(host):
    assert not host.package("xserver-xorg-core").is_installed
    assert not host.package("nvidia-driver").is_installed


def test_nouveau_blacklisted(host):
    conf = host.file("/etc/modprobe.d/h100fleet-blacklist-nouveau.conf").content_string
    assert "blacklist nouveau" in conf
    assert "options nouveau modeset=0" in conf


def test_persistenced_enabled(host):
    assert host.service("nvidia-persistenced").is_enabled


def test_dkms_registered_the_open_module(host):
    status = host.check_output("dkms status")
    assert f"nvidia-current-open/{VERSION}" in status


def test_driver_fact(host):
    fact = json.loads(host.file("/etc/ansible/facts.d/h100fleet_driver.fact").content_string)
    assert fact["installed_version"] == VERSION
    assert fact["module_flavor"] == "open"
    assert fact["held"] is True


# The kernel modules of the driver, as make builds them (DKMS installs them under its DEST_MODULE_NAMEs).
# NVIDIA's modules nvidia.ko, nvidia-uvm.ko and nvidia-modeset.ko, as Debian's package names their files (its
# DKMS config renames them so that several driver versions can be installed side by side); modinfo still gives
# the kernel's module names.
BUILT_MODULES = {
    "nvidia": "nvidia-current-open",
    "nvidia_uvm": "nvidia-current-open-uvm",
    "nvidia_modeset": "nvidia-current-open-modeset",
}


def kernels_with_headers(host) -> list[str]:
    return host.check_output("ls -1 /lib/modules/*/build -d | cut -d/ -f4").split()


def test_headers_of_debian_13s_current_kernel_are_installed(host):
    kernels = kernels_with_headers(host)
    # linux-headers-amd64 depends on the headers of the current kernel of trixie and trixie-security.
    current = host.check_output(
        "apt-cache depends linux-headers-amd64 | sed -n 's/^ *Depends: linux-headers-\\(.*-amd64\\)$/\\1/p'"
    ).strip()
    assert current.startswith("6.12."), current
    assert kernels == [current]


def test_dkms_built_and_installed_the_module_for_that_kernel(host):
    (kernel,) = kernels_with_headers(host)
    status = host.check_output(f"dkms status -m nvidia-current-open -v {VERSION} -k {kernel}")
    assert f"nvidia-current-open/{VERSION}, {kernel}, x86_64: installed" in status


@pytest.mark.parametrize("module", BUILT_MODULES)
def test_kernel_module_built_for_that_kernel(host, module):
    (kernel,) = kernels_with_headers(host)
    # DKMS keeps a copy per kernel (<kernel>/x86_64/module/) and installs one into the kernel's updates/dkms/, both
    # compressed like the kernel's own modules.
    file = BUILT_MODULES[module]
    found = host.check_output(
        f"find /var/lib/dkms/nvidia-current-open/{VERSION}/{kernel} /lib/modules/{kernel}/updates/dkms"
        f" -name '{file}.ko*'"
    ).split()
    assert len(found) == 2, f"{module} ({file}.ko): {found}"
    for path in found:
        assert host.check_output(f"modinfo -F name {path}") == module, path
        assert host.check_output(f"modinfo -F vermagic {path}").split()[0] == kernel, path
        assert host.check_output(f"modinfo -F version {path}") == VERSION, path


def test_module_was_built_with_the_patch(host):
    logs = host.check_output(f"find /var/lib/dkms/nvidia-current-open/{VERSION} -name make.log").split()
    assert logs
    for log in logs:
        assert "Applying patch pci-resize-resource-exclude-bars.patch" in host.file(log).content_string, log

"""What node_baseline leaves on a node, checked on the converged containers."""

from __future__ import annotations

import json

import pytest

from h100fleet.harness import testinfra

testinfra_hosts = testinfra.hosts()

BASE_PACKAGES = ["ca-certificates", "curl", "gnupg", "pciutils", "kmod", "dkms", "numactl", "rsync", "chrony"]


def test_debian_sources_enable_nonfree(host):
    release = host.system_info.codename
    sources = host.file("/etc/apt/sources.list.d/debian.sources")
    assert sources.exists and sources.mode == 0o644
    content = sources.content_string
    assert "Components: main contrib non-free non-free-firmware" in content
    assert f"Suites: {release} {release}-updates" in content
    assert f"Suites: {release}-security" in content
    assert not host.file("/etc/apt/sources.list").exists


def test_nonfree_nvidia_driver_is_installable(host):
    # contrib/non-free really reach apt: the NVIDIA driver has an install candidate.
    policy = host.check_output("apt-cache policy nvidia-driver")
    assert "Candidate: (none)" not in policy
    assert "Candidate:" in policy


def test_apt_uses_the_proxy(host):
    conf = host.file("/etc/apt/apt.conf.d/01h100fleet-proxy")
    assert conf.exists
    assert 'Acquire::http::Proxy "http://127.0.0.1:3142";' in conf.content_string


@pytest.mark.parametrize("name", BASE_PACKAGES)
def test_base_package_installed(host, name):
    assert host.package(name).is_installed


def test_kernel_headers_installed_and_recorded(host):
    fact = json.loads(host.file("/etc/ansible/facts.d/h100fleet_baseline.fact").content_string)
    assert fact["schema"] == 1
    package = fact["kernel_headers_package"]
    assert host.package(package).is_installed
    running = host.check_output("uname -r")
    # A container runs the host's kernel, which no Debian package provides: the metapackage is the honest answer.
    assert fact["kernel_headers_match_running_kernel"] is False
    assert package == "linux-headers-amd64"
    assert not host.package(f"linux-image-{running}").is_installed
    # DKMS has a kernel to build for: the headers of the distribution kernel are present.
    assert host.run("ls /usr/src | grep -q '^linux-headers-.*-amd64$'").rc == 0


def test_chrony_configured_and_enabled(host):
    conf = host.file("/etc/chrony/chrony.conf")
    assert "pool 127.0.0.1 iburst" in conf.content_string
    assert "2.debian.pool.ntp.org" not in conf.content_string
    service = host.service("chrony")
    assert service.is_enabled, testinfra.journal(host, "chrony")
    # No CAP_SYS_TIME in a container: systemd skips chrony on its own condition, and the role records it.
    assert host.check_output("systemctl show -p ConditionResult --value chrony") == "no"
    fact = json.loads(host.file("/etc/ansible/facts.d/h100fleet_baseline.fact").content_string)
    assert fact["time_sync"] is True
    assert fact["time_sync_active"] is False


def test_gpu_fact_runs_and_reports_this_machine(host):
    fact_file = host.file("/etc/ansible/facts.d/h100fleet_node.fact")
    assert fact_file.exists and fact_file.mode == 0o755
    fact = json.loads(host.check_output("/etc/ansible/facts.d/h100fleet_node.fact"))
    assert fact["schema"] == 1
    assert fact["kernel"] == host.check_output("uname -r")
    # The fact counts what sysfs shows; lspci (installed by the role) must agree on the NVIDIA devices.
    lspci_nvidia = host.run("lspci -n -d 10de:").stdout.strip().splitlines()
    gpus_and_switches = [line for line in lspci_nvidia if any(f" {cls}:" in line for cls in ("0300", "0302", "0680"))]
    assert fact["gpu_count"] + fact["nvswitch_count"] == len(gpus_and_switches)
    assert fact["secure_boot"] in {"enabled", "disabled", "not_uefi", "unknown"}


def test_systemd_still_healthy(host):
    state = host.run("systemctl is-system-running").stdout.strip()
    failed = host.run("systemctl --failed --no-legend").stdout
    assert state == "running", failed


def test_shared_wheel_cache_is_mounted_and_writable(host):
    # The harness, not the role: every node shares the host's Python wheel cache (later roles install stacks).
    cache = "/var/cache/h100fleet/uv"
    assert host.mount_point(cache).exists
    probe = f"{cache}/.write-test-{host.check_output('hostname')}"
    assert host.run(f"touch {probe} && rm {probe}").rc == 0

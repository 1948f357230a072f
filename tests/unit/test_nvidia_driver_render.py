"""nvidia_driver for the nodes CI cannot converge offline (Ubuntu 22.04/24.04, RHEL/Rocky 9 and Debian 12 through
NVIDIA's repository), the Debian 13 archive's names and pin, fabric manager, and the preflight's refusals.

One ansible-playbook run of tests/playbooks/nvidia_driver_render.yml (connection local, tags nvidia_driver_preflight
and render) over an inventory in which every test case is a host with a node's facts, its hardware fact and its
settings: the role's argument validation and preflight run for real for each case, and for the cases that pass,
the repository definition, the apt pin or dnf module stream, and the names, specs, URLs and selections the role
would use are rendered from the role's own variable files and templates. The selections (what to hold or lock,
which holds or locks to lift, what the repository offers) are the role's own expressions applied to recorded
command output (fixture_*). Facts cannot be inventory variables (the fact cache wins), so the run gets
`ansible_facts` and `ansible_local` as extra variables that each host resolves to its own. The Debian 13 path is
converged for real by `molecule test -s nvidia_driver`.
"""

from __future__ import annotations

import configparser
import json
import shutil
import subprocess
from datetime import date
from pathlib import Path

import pytest
from helpers import KERNEL_HEADERS, REPO, node_facts, run_role_cases
from test_nvidia_driver_packages import (
    DEBIAN_12_AFTER,
    DEBIAN_12_BEFORE,
    DEBIAN_13_AFTER,
    DEBIAN_13_BEFORE,
    RHEL_AFTER,
    RHEL_LOCKLIST,
    RHEL_OFFER,
    UBUNTU_AFTER,
    UBUNTU_BEFORE,
    UBUNTU_OFFER,
    UBUNTU_OFFER_MATCHING,
)

from h100fleet.fleet import driver_packages as packages
from h100fleet.probes import drivers

PLAYBOOK = REPO / "tests" / "playbooks" / "nvidia_driver_render.yml"
ROLE = REPO / "roles" / "nvidia_driver"
NVIDIA = "https://developer.download.nvidia.com/compute/cuda/repos"
MIRROR = "http://mirror.example.internal/cuda/repos//"
APT_KEYRING = "/etc/apt/keyrings/cuda-archive-keyring.asc"
DNF_KEYRING = "/etc/pki/rpm-gpg/RPM-GPG-KEY-NVIDIA-CUDA"


facts = node_facts


UBUNTU_2204 = facts("Ubuntu", "22.04", "Debian")
UBUNTU_2404 = facts("Ubuntu", "24.04", "Debian")
RHEL_9 = facts("RedHat", "9.4", "RedHat")
ROCKY_9 = facts("Rocky", "9.4", "RedHat")
ALMA_9 = facts("AlmaLinux", "9.4", "RedHat")
DEBIAN_12 = facts("Debian", "12.8", "Debian")
DEBIAN_13 = facts("Debian", "13.2", "Debian")

HGX = {"nvswitch_count": 4}  # an HGX H100 8-GPU board
PCIE = {"nvswitch_count": 0}

# Cases that must pass the preflight and render: id -> (facts, hardware fact, settings).
RENDERED = {
    "ubuntu-22.04": (
        UBUNTU_2204,
        HGX,
        {
            "fixture_before": UBUNTU_BEFORE,
            "fixture_after": UBUNTU_AFTER,
            "fixture_offer": UBUNTU_OFFER,
            "fixture_installed": "550.163.01-0ubuntu1",
        },
    ),
    "ubuntu-22.04-fm-offered": (UBUNTU_2204, HGX, {"fixture_offer": UBUNTU_OFFER_MATCHING}),
    "ubuntu-24.04-proprietary": (UBUNTU_2404, PCIE, {"nvidia_driver_module_flavor": "proprietary"}),
    "ubuntu-24.04-branch": (
        UBUNTU_2404,
        HGX,
        {"nvidia_driver_version": "550", "fixture_offer": UBUNTU_OFFER, "fixture_installed": "550.170.02-0ubuntu1"},
    ),
    "debian-12": (
        DEBIAN_12,
        HGX,
        {"fixture_before": DEBIAN_12_BEFORE, "fixture_after": DEBIAN_12_AFTER, "fixture_installed": "550.163.01-1"},
    ),
    "debian-12-mirror-proprietary": (
        DEBIAN_12,
        PCIE,
        {
            "nvidia_driver_nvidia_repo_base_url": MIRROR,
            "nvidia_driver_module_flavor": "proprietary",
            "nvidia_driver_persistenced": False,
        },
    ),
    "rhel-9": (
        RHEL_9,
        HGX,
        {
            "fixture_after": RHEL_AFTER,
            "fixture_locklist": RHEL_LOCKLIST,
            "fixture_offer": RHEL_OFFER,
            "fixture_installed": "550.163.01-1.el9",
        },
    ),
    "rocky-9-proprietary": (ROCKY_9, PCIE, {"nvidia_driver_module_flavor": "proprietary"}),
    "ubuntu-24.04-secure-boot-signed": (
        UBUNTU_2404,
        {"secure_boot": "enabled"},
        {
            "nvidia_driver_signing_key": "/var/lib/shim-signed/mok/MOK.priv",
            "nvidia_driver_signing_cert": "/var/lib/shim-signed/mok/MOK.der",
        },
    ),
    # A mirror whose host name starts with "s" (a character class [^\\s/] would refuse it).
    "rhel-9-https-mirror": (RHEL_9, PCIE, {"nvidia_driver_nvidia_repo_base_url": "https://sync.example.internal/cuda"}),
    "alma-9-branch-fm-always": (
        ALMA_9,
        PCIE,
        {"nvidia_driver_version": "550", "nvidia_driver_fabricmanager": "always"},
    ),
    "debian-13": (
        DEBIAN_13,
        PCIE,
        {"fixture_before": DEBIAN_13_BEFORE, "fixture_after": DEBIAN_13_AFTER, "fixture_installed": "550.163.01-2"},
    ),
    "debian-13-proprietary-hgx-fm-never": (
        DEBIAN_13,
        HGX,
        {"nvidia_driver_module_flavor": "proprietary", "nvidia_driver_fabricmanager": "never"},
    ),
    # Debian 13 from NVIDIA's debian13 repository: asked for, or (auto) for a branch Debian's archive lacks.
    "debian-13-nvidia-source": (DEBIAN_13, PCIE, {"nvidia_driver_source": "nvidia"}),
    # 580 (R580 LTSB, CUDA 13) on every OS path, as 550.
    "ubuntu-22.04-580": (
        UBUNTU_2204,
        HGX,
        {
            "nvidia_driver_version": "580.159.04",
            "nvidia_driver_cuda_version": "13.0",
            "fixture_installed": "580.159.04-0ubuntu1",
        },
    ),
    "ubuntu-24.04-580-branch": (UBUNTU_2404, PCIE, {"nvidia_driver_version": "580"}),
    "debian-12-580": (DEBIAN_12, HGX, {"nvidia_driver_version": "580.159.04", "fixture_installed": "580.159.04-1"}),
    "debian-13-580": (DEBIAN_13, PCIE, {"nvidia_driver_version": "580.159.04", "nvidia_driver_cuda_version": "13.0"}),
    "debian-13-580-hgx": (DEBIAN_13, HGX, {"nvidia_driver_version": "580.159.04", "fixture_installed": "580.159.04-1"}),
    "rhel-9-580": (
        RHEL_9,
        HGX,
        {
            "nvidia_driver_version": "580.159.04",
            "nvidia_driver_cuda_version": "13.0",
            "fixture_installed": "580.159.04-1.el9",
        },
    ),
    "rocky-9-580-proprietary": (
        ROCKY_9,
        PCIE,
        {"nvidia_driver_version": "580", "nvidia_driver_module_flavor": "proprietary"},
    ),
}

# Cases the role must refuse: id -> (facts, hardware fact, settings, words of the message). "{case}" is the host.
REFUSED = {
    "fedora-40": (facts("Fedora", "40", "RedHat"), PCIE, {}, "{case} runs Fedora 40, which nvidia_driver does not"),
    "ubuntu-20.04": (facts("Ubuntu", "20.04", "Debian"), PCIE, {}, "{case} runs Ubuntu 20.04, which nvidia_driver"),
    "rhel-8": (facts("RedHat", "8.10", "RedHat"), PCIE, {}, "{case} runs RedHat 8.10, which nvidia_driver does not"),
    "debian-11": (
        facts("Debian", "11.11", "Debian"),
        PCIE,
        {},
        "{case} runs Debian 11.11, which nvidia_driver does not support (nvidia_driver_source is auto): NVIDIA's CUDA "
        "repository serves Debian 12, Debian 13, Ubuntu 22, Ubuntu 24, RedHat 9, Rocky 9, AlmaLinux 9.",
    ),
    "debian-12-debian-source": (
        DEBIAN_12,
        PCIE,
        {"nvidia_driver_source": "debian"},
        "nvidia_driver_source is debian, but {case} runs Debian 12.8 and nvidia_driver_version is 550.163.01: the "
        "Debian archive carries the driver only on Debian 13 (branch 550) (Debian 12 has 535). Use one of those, or "
        "set nvidia_driver_source to nvidia (NVIDIA's repository) or auto.",
    ),
    "ubuntu-debian-source": (
        UBUNTU_2204,
        PCIE,
        {"nvidia_driver_source": "debian"},
        "nvidia_driver_source is debian, but {case} runs Ubuntu 22.04",
    ),
    "debian-13-580-debian-source": (
        DEBIAN_13,
        PCIE,
        {"nvidia_driver_version": "580", "nvidia_driver_source": "debian"},
        "nvidia_driver_source is debian, but {case} runs Debian 13.2 and nvidia_driver_version is 580: the Debian "
        "archive carries the driver only on Debian 13 (branch 550)",
    ),
    "cuda-13-on-550": (
        UBUNTU_2204,
        PCIE,
        {"nvidia_driver_cuda_version": "13.0"},
        "nvidia_driver_version 550.163.01 cannot run CUDA 13.0, which needs a driver >= 580.65.06: choose branch 580 "
        "or newer",
    ),
    "aarch64": ({**UBUNTU_2204, "architecture": "aarch64"}, PCIE, {}, "{case} is aarch64; nvidia_driver installs the"),
    "base-url-no-scheme": (
        RHEL_9,
        PCIE,
        {"nvidia_driver_nvidia_repo_base_url": "mirror.example.internal/cuda"},
        "nvidia_driver_nvidia_repo_base_url is 'mirror.example.internal/cuda'; expected an http:// or https:// URL",
    ),
    "debian-13-hgx": (
        DEBIAN_13,
        HGX,
        {},
        "{case} has 4 NVSwitches (nvidia_driver_fabricmanager is auto) and needs nvidia-fabricmanager at exactly the "
        "driver's version, which Debian does not package (nvidia_driver_source is debian)",
    ),
    "debian-13-fm-always": (
        DEBIAN_13,
        PCIE,
        {"nvidia_driver_fabricmanager": "always"},
        "(nvidia_driver_fabricmanager is always) and needs nvidia-fabricmanager",
    ),
    "branch-535-on-ubuntu": (UBUNTU_2204, PCIE, {"nvidia_driver_version": "535"}, "nvidia_driver_version 535 cannot"),
    # Types and choices are checked by the role's argument_specs before any task runs.
    "unknown-source": (UBUNTU_2204, PCIE, {"nvidia_driver_source": "conda"}, "nvidia_driver_source"),
    "unknown-fm-policy": (
        UBUNTU_2204,
        PCIE,
        {"nvidia_driver_fabricmanager": "sometimes"},
        "nvidia_driver_fabricmanager",
    ),
}


def run_cases(
    playbook: Path, workdir: Path, group: str, hosts: dict, *, tags: str, extra: dict
) -> dict[str, str | None]:
    """The role-case runner, with the preflight's kernel-headers directory pointed at the recorded one."""
    return run_role_cases(
        playbook, workdir, group, hosts, tags=tags, extra={"__nvidia_driver_modules_dir": KERNEL_HEADERS, **extra}
    )


def host(node: dict, local: dict, render_dir: Path, settings: dict) -> dict:
    return {
        "node_facts": node,
        "node_local": {"h100fleet_node": {"gpu_count": 8, "secure_boot": "disabled", **local}},
        "render_dir": str(render_dir),
        **settings,
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Run every case once; return (host -> failure message or None, render directory of each case)."""
    tmp = tmp_path_factory.mktemp("nvidia_driver")
    cases = {name: (node, local, settings) for name, (node, local, settings) in RENDERED.items()}
    cases.update({name: (node, local, settings) for name, (node, local, settings, _) in REFUSED.items()})
    hosts = {name: host(node, local, tmp / name, settings) for name, (node, local, settings) in cases.items()}
    extra = {"ansible_facts": "{{ node_facts }}", "ansible_local": "{{ node_local }}"}
    return run_cases(
        PLAYBOOK, tmp, "nvidia_driver_cases", hosts, tags="nvidia_driver_preflight,render", extra=extra
    ), tmp


def rendered(run, case: str) -> tuple[dict, Path]:
    failures, tmp = run
    assert failures[case] is None, failures[case]
    return json.loads((tmp / case / "resolved.json").read_text()), tmp / case


def entries(text: str) -> list[str]:
    """The lines of a rendered file that are not comments or blank."""
    return [line for line in text.splitlines() if line and not line.startswith("#")]


# --- Source and package names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "source", "vars_file", "install_tasks"),
    [
        ("ubuntu-22.04", "nvidia", "nvidia-Ubuntu.yml", "install-Debian.yml"),
        ("ubuntu-24.04-proprietary", "nvidia", "nvidia-Ubuntu.yml", "install-Debian.yml"),
        ("debian-12", "nvidia", "nvidia-Debian.yml", "install-Debian.yml"),
        ("rhel-9", "nvidia", "nvidia-RedHat.yml", "install-RedHat.yml"),
        ("rocky-9-proprietary", "nvidia", "nvidia-RedHat.yml", "install-RedHat.yml"),
        ("alma-9-branch-fm-always", "nvidia", "nvidia-RedHat.yml", "install-RedHat.yml"),
        ("debian-13", "debian", "debian-Debian.yml", "install-Debian.yml"),
        ("debian-13-nvidia-source", "nvidia", "nvidia-Debian.yml", "install-Debian.yml"),
        ("debian-13-580", "nvidia", "nvidia-Debian.yml", "install-Debian.yml"),
        ("ubuntu-22.04-580", "nvidia", "nvidia-Ubuntu.yml", "install-Debian.yml"),
        ("debian-12-580", "nvidia", "nvidia-Debian.yml", "install-Debian.yml"),
        ("rhel-9-580", "nvidia", "nvidia-RedHat.yml", "install-RedHat.yml"),
    ],
)
def test_source_and_files_are_chosen_per_os(run, case, source, vars_file, install_tasks):
    resolved, _ = rendered(run, case)
    assert (resolved["source"], resolved["vars_file"], resolved["install_tasks"]) == (source, vars_file, install_tasks)
    assert (ROLE / "vars" / vars_file).is_file()
    assert (ROLE / "tasks" / install_tasks).is_file()


@pytest.mark.parametrize(
    ("case", "specs", "version_package", "dkms_module"),
    [
        (
            "ubuntu-22.04",
            [
                "nvidia-headless-550-open=550.163.01-*",
                "nvidia-utils-550=550.163.01-*",
                "libnvidia-compute-550=550.163.01-*",
                "nvidia-compute-utils-550=550.163.01-*",
            ],
            "nvidia-utils-550",
            "nvidia",
        ),
        (
            "ubuntu-24.04-proprietary",
            [
                "nvidia-headless-550=550.163.01-*",
                "nvidia-utils-550=550.163.01-*",
                "libnvidia-compute-550=550.163.01-*",
                "nvidia-compute-utils-550=550.163.01-*",
            ],
            "nvidia-utils-550",
            "nvidia",
        ),
        (
            "ubuntu-24.04-branch",
            ["nvidia-headless-550-open", "nvidia-utils-550", "libnvidia-compute-550", "nvidia-compute-utils-550"],
            "nvidia-utils-550",
            "nvidia",
        ),
        (
            "debian-12",
            [
                "nvidia-kernel-open-dkms=550.163.01-*",
                "nvidia-driver-cuda=550.163.01-*",
                "nvidia-persistenced=550.163.01-*",
            ],
            "nvidia-driver-cuda",
            "nvidia-current-open",
        ),
        (
            "debian-12-mirror-proprietary",
            ["nvidia-kernel-dkms=550.163.01-*", "nvidia-driver-cuda=550.163.01-*"],
            "nvidia-driver-cuda",
            "nvidia-current",
        ),
        (
            "rhel-9",
            ["kmod-nvidia-open-dkms-550.163.01", "nvidia-driver-cuda-550.163.01", "nvidia-persistenced-550.163.01"],
            "nvidia-driver-cuda",
            "nvidia-open",
        ),
        (
            "rocky-9-proprietary",
            ["kmod-nvidia-latest-dkms-550.163.01", "nvidia-driver-cuda-550.163.01", "nvidia-persistenced-550.163.01"],
            "nvidia-driver-cuda",
            "nvidia",
        ),
        (
            "alma-9-branch-fm-always",
            ["kmod-nvidia-open-dkms", "nvidia-driver-cuda", "nvidia-persistenced"],
            "nvidia-driver-cuda",
            "nvidia-open",
        ),
        (
            "debian-13",
            [
                "nvidia-open-kernel-dkms=550.163.01-*",
                "nvidia-smi=550.163.01-*",
                "libcuda1=550.163.01-*",
                "libnvidia-ml1=550.163.01-*",
                "libnvidia-ptxjitcompiler1=550.163.01-*",
                "firmware-nvidia-gsp=550.163.01-*",
                "nvidia-persistenced=550.163.01-*",
            ],
            "nvidia-smi",
            "nvidia-current-open",
        ),
        (
            "debian-13-proprietary-hgx-fm-never",
            [
                "nvidia-kernel-dkms=550.163.01-*",
                "nvidia-smi=550.163.01-*",
                "libcuda1=550.163.01-*",
                "libnvidia-ml1=550.163.01-*",
                "libnvidia-ptxjitcompiler1=550.163.01-*",
                "firmware-nvidia-gsp=550.163.01-*",
                "nvidia-persistenced=550.163.01-*",
            ],
            "nvidia-smi",
            "nvidia-current",
        ),
        (
            "ubuntu-22.04-580",
            [
                "nvidia-headless-580-open=580.159.04-*",
                "nvidia-utils-580=580.159.04-*",
                "libnvidia-compute-580=580.159.04-*",
                "nvidia-compute-utils-580=580.159.04-*",
            ],
            "nvidia-utils-580",
            "nvidia",
        ),
        (
            "ubuntu-24.04-580-branch",
            ["nvidia-headless-580-open", "nvidia-utils-580", "libnvidia-compute-580", "nvidia-compute-utils-580"],
            "nvidia-utils-580",
            "nvidia",
        ),
        (
            "debian-12-580",
            [
                "nvidia-kernel-open-dkms=580.159.04-*",
                "nvidia-driver-cuda=580.159.04-*",
                "nvidia-persistenced=580.159.04-*",
            ],
            "nvidia-driver-cuda",
            "nvidia-current-open",
        ),
        (
            "debian-13-580",
            [
                "nvidia-kernel-open-dkms=580.159.04-*",
                "nvidia-driver-cuda=580.159.04-*",
                "nvidia-persistenced=580.159.04-*",
            ],
            "nvidia-driver-cuda",
            "nvidia-current-open",
        ),
        (
            "rhel-9-580",
            ["kmod-nvidia-open-dkms-580.159.04", "nvidia-driver-cuda-580.159.04", "nvidia-persistenced-580.159.04"],
            "nvidia-driver-cuda",
            "nvidia-open",
        ),
        (
            "rocky-9-580-proprietary",
            ["kmod-nvidia-latest-dkms", "nvidia-driver-cuda", "nvidia-persistenced"],
            "nvidia-driver-cuda",
            "nvidia",
        ),
    ],
)
def test_package_specs_per_os_and_flavor(run, case, specs, version_package, dkms_module):
    resolved, _ = rendered(run, case)
    assert resolved["install_specs"] == specs
    assert resolved["version_package"] == version_package
    assert resolved["dkms_module"] == dkms_module


def test_no_desktop_driver_metapackage_is_installed(run):
    """cuda-drivers, nvidia-driver-550-open, nvidia-open, nvidia-driver (Debian) pull Xorg onto a compute node."""
    for case in RENDERED:
        resolved, _ = rendered(run, case)
        names = {
            spec.split("=")[0].removesuffix("-550.163.01").removesuffix("-580.159.04")
            for spec in resolved["install_specs"]
        }
        assert not names & DESKTOP, (case, names)


DESKTOP = {"cuda-drivers", "nvidia-driver", "nvidia-open", "nvidia-driver-libs"}
DESKTOP |= {f"{name}-{b}" for b in (550, 580) for name in ("cuda-drivers", "nvidia-driver", "nvidia-open")}
DESKTOP |= {"nvidia-driver-550-open", "nvidia-driver-580-open", "xserver-xorg-video-nvidia-550"}


# --- NVIDIA's repository -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "repo_dir", "key"),
    [
        ("ubuntu-22.04", "ubuntu2204", "3bf863cc.pub"),
        ("ubuntu-24.04-proprietary", "ubuntu2404", "3bf863cc.pub"),
        ("debian-12", "debian12", "3bf863cc.pub"),
        ("debian-12-580", "debian12", "3bf863cc.pub"),
        ("debian-13-580", "debian13", "8793F200.pub"),
        ("debian-13-nvidia-source", "debian13", "8793F200.pub"),
    ],
)
def test_apt_nodes_get_nvidia_flat_repository_signed_by_its_key(run, case, repo_dir, key):
    """Debian 13's repository is signed by its own key (8793F200), the others by 3bf863cc."""
    resolved, out = rendered(run, case)
    url = f"{NVIDIA}/{repo_dir}/x86_64"
    assert resolved["repo_url"] == url
    assert resolved["key_url"] == f"{url}/{key}"
    assert resolved["keyring"] == APT_KEYRING
    assert resolved["repo_file"] == f"/etc/apt/sources.list.d/cuda-{repo_dir}-x86_64.sources"
    sources = (out / "repository").read_text()
    assert sources.startswith("#\n# Ansible managed")
    assert entries(sources) == ["Types: deb", f"URIs: {url}/", "Suites: /", f"Signed-By: {APT_KEYRING}"]


def test_mirror_base_url_flows_into_repository_and_key(run):
    resolved, out = rendered(run, "debian-12-mirror-proprietary")
    url = "http://mirror.example.internal/cuda/repos/debian12/x86_64"
    assert resolved["repo_url"] == url
    assert resolved["key_url"] == f"{url}/3bf863cc.pub"
    assert f"URIs: {url}/\n" in (out / "repository").read_text()
    resolved, out = rendered(run, "rhel-9-https-mirror")
    assert resolved["key_url"] == "https://sync.example.internal/cuda/rhel9/x86_64/D42D0685.pub"
    assert "baseurl=https://sync.example.internal/cuda/rhel9/x86_64\n" in (out / "repository").read_text()


@pytest.mark.parametrize("case", ["rhel-9", "rocky-9-proprietary", "alma-9-branch-fm-always", "rhel-9-580"])
def test_el9_nodes_get_nvidia_rhel9_repository_with_gpg_check(run, case):
    resolved, out = rendered(run, case)
    url = f"{NVIDIA}/rhel9/x86_64"
    assert resolved["repo_url"] == url
    assert resolved["key_url"] == f"{url}/D42D0685.pub"
    assert resolved["keyring"] == DNF_KEYRING
    assert resolved["repo_file"] == "/etc/yum.repos.d/cuda-rhel9.repo"
    repo = configparser.ConfigParser()
    repo.read_string((out / "repository").read_text())
    assert repo.sections() == ["cuda-rhel9-x86_64"]
    assert dict(repo["cuda-rhel9-x86_64"]) == {
        "name": "NVIDIA CUDA rhel9 x86_64",
        "baseurl": url,
        "enabled": "1",
        "gpgcheck": "1",
        "gpgkey": f"file://{DNF_KEYRING}",
    }
    # The internal role trusts that key; the install tasks lock versions with dnf's versionlock plugin.
    repository = (REPO / "roles" / "nvidia_repo" / "tasks" / "repository.yml").read_text()
    assert "ansible.builtin.rpm_key:\n    key: \"{{ __nvidia_repo['keyring'] }}\"" in repository
    install = (ROLE / "tasks" / "install-RedHat.yml").read_text()
    assert "name: python3-dnf-plugin-versionlock" in install
    assert "community.general.dnf_versionlock:" in install
    # What the repository offers is read past the locks (the plugin hides every version but a locked one).
    assert "'--disableplugin=versionlock', 'repoquery'" in install


def test_debian_13_adds_no_repository(run):
    _, out = rendered(run, "debian-13")
    assert not (out / "repository").exists()


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt-get (a Debian or Ubuntu control node)")
def test_apt_reads_the_rendered_sources_as_a_flat_repository(run, tmp_path):
    resolved, out = rendered(run, "ubuntu-24.04-proprietary")
    shutil.copy(out / "repository", tmp_path / "cuda.sources")
    result = subprocess.run(
        [
            "apt-get",
            "-o",
            "Dir::Etc::SourceList=/dev/null",
            "-o",
            f"Dir::Etc::SourceParts={tmp_path}",
            "indextargets",
            "--no-release-info",
            "--format",
            "$(TARGET_OF) $(URI)",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["deb", f"{resolved['repo_url']}/Packages"]


CUDA_TOOLKIT_CASES = {
    "ubuntu-22.04": (UBUNTU_2204, {}),
    "ubuntu-24.04-proprietary": (UBUNTU_2404, {}),
    "debian-12": (DEBIAN_12, {}),
    "debian-12-mirror-proprietary": (DEBIAN_12, {"cuda_toolkit_nvidia_repo_base_url": MIRROR}),
    "rhel-9": (RHEL_9, {}),
    "rocky-9-proprietary": (ROCKY_9, {}),
    "debian-13-580": (DEBIAN_13, {"cuda_toolkit_source": "nvidia"}),
    "rhel-9-580": (RHEL_9, {}),
}


def test_both_roles_write_the_same_repository_file(run, tmp_path):
    """cuda_toolkit writes the same file on the same node: identical contents, or the two roles would rewrite each
    other's file on every run (and apt refuses one repository with two Signed-By keyrings)."""
    hosts = {
        name: {"node_facts": node, "render_dir": str(tmp_path / name), **settings}
        for name, (node, settings) in CUDA_TOOLKIT_CASES.items()
    }
    playbook = REPO / "tests" / "playbooks" / "cuda_toolkit_render.yml"
    failures = run_cases(
        playbook,
        tmp_path,
        "cuda_toolkit_cases",
        hosts,
        tags="cuda_toolkit_preflight,render",
        extra={"ansible_facts": "{{ node_facts }}"},
    )
    assert not any(failures.values()), failures
    for case in CUDA_TOOLKIT_CASES:
        driver, out = rendered(run, case)
        toolkit = json.loads((tmp_path / case / "resolved.json").read_text())
        assert (out / "repository").read_bytes() == (tmp_path / case / "repository").read_bytes(), case
        for key in ("repo_url", "key_url", "keyring", "repo_file"):
            assert driver[key] == toolkit[key], (case, key)


# --- Pin and hold (apt) ----------------------------------------------------------------------------------------


def test_ubuntu_pin_names_the_branch_packages_at_the_version(run):
    _, out = rendered(run, "ubuntu-22.04")
    assert entries((out / "nvidia-driver.pref").read_text()) == [
        "Package: *nvidia*-550 *nvidia*-550-open nvidia-firmware-550-*",
        "Pin: version 550.163.01-*",
        "Pin-Priority: 1001",
    ]


def test_ubuntu_branch_pin_keeps_the_branch(run):
    _, out = rendered(run, "ubuntu-24.04-branch")
    assert entries((out / "nvidia-driver.pref").read_text())[1] == "Pin: version 550.*"


def test_debian_12_pin_names_nvidia_packages_and_libcuda(run):
    _, out = rendered(run, "debian-12")
    assert entries((out / "nvidia-driver.pref").read_text()) == [
        "Package: *nvidia* libcuda*",
        "Pin: version 550.163.01-*",
        "Pin-Priority: 1001",
    ]


def test_debian_13_pin_is_by_source_package(run):
    _, out = rendered(run, "debian-13")
    assert entries((out / "nvidia-driver.pref").read_text()) == [
        "Package: src:nvidia-graphics-drivers",
        "Pin: version 550.163.01-*",
        "Pin-Priority: 1001",
        "Package: src:nvidia-open-gpu-kernel-modules",
        "Pin: version 550.163.01-*",
        "Pin-Priority: 1001",
        "Package: src:nvidia-persistenced",
        "Pin: version 550.163.01-*",
        "Pin-Priority: 1001",
    ]


def apt_sandbox(tmp: Path, packages: list[tuple[str, str, str]], installed: list[tuple[str, str]], pref: str):
    """An apt configuration of its own: a flat file: repository with the given (name, version, source) packages,
    a dpkg status with the given installed (name, version), and the given preferences. Returns apt's options."""
    (tmp / "repo").mkdir(parents=True)
    (tmp / "parts").mkdir()
    (tmp / "prefparts").mkdir()
    (tmp / "state" / "lists" / "partial").mkdir(parents=True)
    (tmp / "cache" / "archives" / "partial").mkdir(parents=True)
    stanzas = [
        f"Package: {name}\nVersion: {version}\nArchitecture: amd64\nSource: {source}\n"
        f"Filename: ./{name}_{version}_amd64.deb\nSize: 1\nDescription: test\n"
        for name, version, source in packages
    ]
    (tmp / "repo" / "Packages").write_text("\n".join(stanzas) + "\n")
    status = [
        f"Package: {name}\nStatus: install ok installed\nVersion: {version}\nArchitecture: amd64\n"
        "Maintainer: test\nDescription: test\n"
        for name, version in installed
    ]
    (tmp / "status").write_text("\n".join(status) + "\n")
    (tmp / "sources.list").write_text(f"deb [trusted=yes] file:{tmp / 'repo'}/ /\n")
    (tmp / "pref").write_text(pref)
    options = {
        "Dir::State": tmp / "state",
        "Dir::State::status": tmp / "status",
        "Dir::Cache": tmp / "cache",
        "Dir::Etc::SourceList": tmp / "sources.list",
        "Dir::Etc::SourceParts": tmp / "parts",
        "Dir::Etc::Preferences": tmp / "pref",
        "Dir::Etc::PreferencesParts": tmp / "prefparts",
        "APT::Architecture": "amd64",
        "Debug::NoLocking": "1",
    }
    argv = [arg for key, value in options.items() for arg in ("-o", f"{key}={value}")]
    result = subprocess.run(["apt-get", *argv, "update"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return argv


def candidates(argv: list[str], names: list[str]) -> dict[str, str]:
    policy = subprocess.run(["apt-cache", *argv, "policy", *names], capture_output=True, text=True, check=True).stdout
    found, name = {}, None
    for line in policy.splitlines():
        if not line.startswith(" "):
            name = line.rstrip(":")
        elif line.strip().startswith("Candidate:"):
            found[name] = line.split(":", 1)[1].strip()
    return found


def upgrades(argv: list[str]) -> list[str]:
    simulated = subprocess.run(["apt-get", *argv, "-s", "upgrade"], capture_output=True, text=True, check=True).stdout
    return [line.split()[1] for line in simulated.splitlines() if line.startswith("Inst ")]


UBUNTU_INDEX = [
    ("nvidia-utils-550", "550.163.01-0ubuntu1", "nvidia-graphics-drivers-550"),
    ("nvidia-utils-550", "550.170.02-0ubuntu1", "nvidia-graphics-drivers-550"),
    ("nvidia-dkms-550-open", "550.163.01-0ubuntu1", "nvidia-graphics-drivers-550"),
    ("nvidia-dkms-550-open", "550.170.02-0ubuntu1", "nvidia-graphics-drivers-550"),
    ("nvidia-firmware-550-550.163.01", "550.163.01-0ubuntu1", "nvidia-graphics-drivers-550"),
    ("nvidia-fabricmanager-550", "550.163.01-1", "fabricmanager"),
    ("nvidia-fabricmanager-550", "550.170.02-1", "fabricmanager"),
    ("nvidia-utils-560", "560.35.03-0ubuntu1", "nvidia-graphics-drivers-560"),
    ("nvidia-container-toolkit", "1.17.8-1", "nvidia-container-toolkit"),
    ("nvidia-container-toolkit", "1.18.0-1", "nvidia-container-toolkit"),
]


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt-get (a Debian or Ubuntu control node)")
def test_apt_keeps_ubuntu_driver_and_fabric_manager_at_the_version_with_the_rendered_pin(run, tmp_path):
    """apt itself reads the rendered pin: NVIDIA's repository offers 550.170.02 beside 550.163.01; the candidate of
    every driver package and of fabric manager stays 550.163.01 and `apt-get -s upgrade` installs nothing NVIDIA
    but the container toolkit, which the pin leaves alone. Without the pin apt would upgrade (checked too)."""
    _, out = rendered(run, "ubuntu-22.04")
    installed = [
        ("nvidia-utils-550", "550.163.01-0ubuntu1"),
        ("nvidia-dkms-550-open", "550.163.01-0ubuntu1"),
        ("nvidia-fabricmanager-550", "550.163.01-1"),
        ("nvidia-container-toolkit", "1.17.8-1"),
    ]
    argv = apt_sandbox(tmp_path / "pinned", UBUNTU_INDEX, installed, (out / "nvidia-driver.pref").read_text())
    assert candidates(argv, ["nvidia-utils-550", "nvidia-dkms-550-open", "nvidia-fabricmanager-550"]) == {
        "nvidia-utils-550": "550.163.01-0ubuntu1",
        "nvidia-dkms-550-open": "550.163.01-0ubuntu1",
        "nvidia-fabricmanager-550": "550.163.01-1",
    }
    assert upgrades(argv) == ["nvidia-container-toolkit"]
    unpinned = apt_sandbox(tmp_path / "unpinned", UBUNTU_INDEX, installed, "")
    assert sorted(upgrades(unpinned)) == sorted(
        ["nvidia-utils-550", "nvidia-dkms-550-open", "nvidia-fabricmanager-550", "nvidia-container-toolkit"]
    )


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt-get (a Debian or Ubuntu control node)")
def test_apt_keeps_debian_13_packages_at_the_version_with_the_source_pin(run, tmp_path):
    _, out = rendered(run, "debian-13")
    index = [
        ("nvidia-smi", "550.163.01-2", "nvidia-graphics-drivers"),
        ("nvidia-smi", "550.170.02-1", "nvidia-graphics-drivers"),
        ("nvidia-open-kernel-dkms", "550.163.01-1", "nvidia-open-gpu-kernel-modules"),
        ("nvidia-open-kernel-dkms", "550.170.02-1", "nvidia-open-gpu-kernel-modules"),
        ("nvidia-modprobe", "550.54.14-1", "nvidia-modprobe"),
        ("nvidia-modprobe", "570.86.10-1", "nvidia-modprobe"),
    ]
    installed = [("nvidia-smi", "550.163.01-2"), ("nvidia-open-kernel-dkms", "550.163.01-1")]
    installed.append(("nvidia-modprobe", "550.54.14-1"))
    argv = apt_sandbox(tmp_path, index, installed, (out / "nvidia-driver.pref").read_text())
    assert candidates(argv, ["nvidia-smi", "nvidia-open-kernel-dkms"]) == {
        "nvidia-smi": "550.163.01-2",
        "nvidia-open-kernel-dkms": "550.163.01-1",
    }
    assert upgrades(argv) == ["nvidia-modprobe"]  # not one of the driver's source packages


# --- Module stream and version locks (dnf) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "stream"),
    [
        ("rhel-9", "550-open"),
        ("rocky-9-proprietary", "550-dkms"),
        ("alma-9-branch-fm-always", "550-open"),
        ("rhel-9-580", "580-open"),
        ("rocky-9-580-proprietary", "580-dkms"),
    ],
)
def test_el9_module_stream_per_flavor(run, case, stream):
    resolved, out = rendered(run, case)
    assert resolved["dnf_module_stream"] == stream
    module = configparser.ConfigParser()
    module.read_string((out / "nvidia-driver.module").read_text())
    assert dict(module["nvidia-driver"]) == {
        "name": "nvidia-driver",
        "stream": stream,
        "profiles": "",
        "state": "enabled",
    }


def test_el9_initramfs_is_regenerated_with_dracut(run):
    assert rendered(run, "rhel-9")[0]["initramfs"] == ["dracut", "--force", "--regenerate-all"]
    assert rendered(run, "debian-12")[0]["initramfs"] == ["update-initramfs", "-u", "-k", "all"]


# --- Fabric manager ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "wanted", "package", "spec"),
    [
        ("ubuntu-22.04", True, "nvidia-fabricmanager-550", "nvidia-fabricmanager-550=550.163.01-*"),
        ("ubuntu-24.04-branch", True, "nvidia-fabricmanager-550", "nvidia-fabricmanager-550=550.170.02-*"),
        ("ubuntu-24.04-proprietary", False, "nvidia-fabricmanager-550", None),
        ("debian-12", True, "nvidia-fabricmanager-550", "nvidia-fabricmanager-550=550.163.01-*"),
        ("rhel-9", True, "nvidia-fabric-manager", "nvidia-fabric-manager-550.163.01"),
        ("alma-9-branch-fm-always", True, "nvidia-fabric-manager", None),
        ("debian-13-proprietary-hgx-fm-never", False, "", None),
        ("ubuntu-22.04-580", True, "nvidia-fabricmanager-580", "nvidia-fabricmanager-580=580.159.04-*"),
        ("debian-12-580", True, "nvidia-fabricmanager-580", "nvidia-fabricmanager-580=580.159.04-*"),
        ("debian-13-580-hgx", True, "nvidia-fabricmanager-580", "nvidia-fabricmanager-580=580.159.04-*"),
        # From R580 NVIDIA's RPM is nvidia-fabricmanager (before: nvidia-fabric-manager).
        ("rhel-9-580", True, "nvidia-fabricmanager", "nvidia-fabricmanager-580.159.04"),
    ],
)
def test_fabric_manager_on_nvswitch_nodes_at_the_installed_driver_version(run, case, wanted, package, spec):
    resolved, _ = rendered(run, case)
    assert resolved["fabricmanager_wanted"] is wanted
    assert resolved["fabricmanager_package"] == package
    assert resolved["fabricmanager_spec"] == spec


# --- The role's variables call the package selection and the driver table ----------------------------------------


@pytest.mark.parametrize("case", ["ubuntu-22.04", "debian-12", "debian-13", "rhel-9"])
def test_role_selections_are_the_package_functions(run, case):
    """The role's expressions over recorded command output give what h100fleet.fleet.driver_packages gives
    (whose cases are tests/unit/test_nvidia_driver_packages.py)."""
    resolved, _ = rendered(run, case)
    node, _, settings = RENDERED[case]
    version = settings.get("nvidia_driver_version", "550.163.01")
    names, sources = resolved["pin_names"], resolved["pin_sources"]
    if node["os_family"] == "Debian":
        assert resolved["apt_release"] == packages.apt_release(settings["fixture_before"], version, names, sources)
        assert resolved["apt_hold"] == packages.apt_hold(settings["fixture_after"], version, names, sources)
        assert resolved["apt_hold"]  # the fixture has driver packages to hold
    else:
        assert resolved["dnf_lock"] == packages.dnf_lock(settings["fixture_after"], version, names)
        assert resolved["dnf_unlock"] == packages.dnf_unlock(settings["fixture_locklist"], version, names)
        assert resolved["dnf_lock"] and resolved["dnf_unlock"]
    if "fixture_offer" in settings:
        assert resolved["offered_driver"] == packages.offered(settings["fixture_offer"], resolved["version_package"])
        assert resolved["offers_driver"] is packages.offers(resolved["offered_driver"], version)
    assert resolved["version_glob"] == packages.version_glob(version)


@pytest.mark.parametrize("case", ["ubuntu-22.04", "ubuntu-22.04-580", "debian-13", "rhel-9-580"])
def test_role_reads_the_driver_table(run, case):
    resolved, _ = rendered(run, case)
    _, _, settings = RENDERED[case]
    version = settings.get("nvidia_driver_version", "550.163.01")
    cuda = settings.get("nvidia_driver_cuda_version", "12.4")
    assert resolved["check"] == drivers.driver_check(version, cuda, date.today())


def test_fabric_manager_is_held_with_the_driver(run):
    assert "nvidia-fabricmanager-550" in rendered(run, "ubuntu-22.04")[0]["apt_hold"]
    assert "nvidia-fabric-manager-550.163.01-1" in rendered(run, "rhel-9")[0]["dnf_lock"]


# --- Preflight -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(RENDERED))
def test_supported_node_passes_preflight(run, case):
    failures, _ = run
    assert failures[case] is None, failures[case]


@pytest.mark.parametrize("case", list(REFUSED))
def test_bad_setting_or_unsupported_node_is_refused_by_name(run, case):
    failures, _ = run
    expected = REFUSED[case][3].replace("{case}", case)
    assert failures[case] is not None, f"{case} was not refused"
    assert expected in " ".join(failures[case].split())


def test_secure_boot_node_with_a_key_gets_dkms_signing(run):
    _, directory = rendered(run, "ubuntu-24.04-secure-boot-signed")
    assert entries((directory / "dkms-module-signing.conf").read_text()) == [
        'mok_signing_key="/var/lib/shim-signed/mok/MOK.priv"',
        'mok_certificate="/var/lib/shim-signed/mok/MOK.der"',
    ]
    _, plain = rendered(run, "ubuntu-24.04-proprietary")
    assert not (plain / "dkms-module-signing.conf").exists()

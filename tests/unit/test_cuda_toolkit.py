"""cuda_toolkit for the nodes CI cannot converge offline (Ubuntu, RHEL, Debian 12 through NVIDIA's repository),
and the preflight's refusals.

One ansible-playbook run of tests/playbooks/cuda_toolkit_render.yml (connection local, tags cuda_toolkit_preflight
and render) over an inventory in which every test case is a host with a node's facts and its settings: the role's
argument validation and preflight run for real for each case, and for the cases that pass, the repository
definition, the login-shell profile and the package, paths and URLs the role would use are rendered from the
role's own variable files and templates. Facts cannot be inventory variables (the fact cache wins), so the run gets
`ansible_facts` as an extra variable that each host resolves to its own `node_facts`. The Debian 13 path is
converged for real by `molecule test -s cuda_toolkit`.
"""

from __future__ import annotations

import configparser
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import REPO, node_facts, run_role_cases

PLAYBOOK = REPO / "tests" / "playbooks" / "cuda_toolkit_render.yml"
ROLE = REPO / "roles" / "cuda_toolkit"
NVIDIA = "https://developer.download.nvidia.com/compute/cuda/repos"


facts = node_facts


UBUNTU_2204 = facts("Ubuntu", "22.04", "Debian")
UBUNTU_2404 = facts("Ubuntu", "24.04", "Debian")
RHEL_9 = facts("RedHat", "9.4", "RedHat")
ROCKY_9 = facts("Rocky", "9.4", "RedHat")
DEBIAN_12 = facts("Debian", "12.8", "Debian")
DEBIAN_13 = facts("Debian", "13.2", "Debian")

# Cases that must pass the preflight and render: id -> (facts, settings).
RENDERED = {
    "ubuntu-22.04": (UBUNTU_2204, {}),
    "ubuntu-24.04": (UBUNTU_2404, {}),
    "debian-12": (DEBIAN_12, {}),
    "rhel-9": (RHEL_9, {}),
    "rocky-9": (ROCKY_9, {}),
    "debian-13": (DEBIAN_13, {}),
    "mirror-12.6-no-link": (
        UBUNTU_2204,
        {
            "cuda_toolkit_nvidia_repo_base_url": "http://mirror.example.internal/cuda/repos//",
            "cuda_toolkit_version": "12.6",
            "cuda_toolkit_manage_link": False,
        },
    ),
    # Debian 13 from NVIDIA's debian13 repository, signed by its own key.
    "debian-13-nvidia-source": (DEBIAN_13, {"cuda_toolkit_source": "nvidia", "cuda_toolkit_version": "13.0"}),
    # A host starting with "s": a regression test for a pattern that once excluded the letter instead of spaces.
    "mirror-host-with-s": (RHEL_9, {"cuda_toolkit_nvidia_repo_base_url": "https://sync.example.internal/cuda"}),
}

# Cases the role must refuse: id -> (facts, settings, words of the message). "{case}" is the case's host name.
REFUSED = {
    "version-major-only": (
        DEBIAN_13,
        {"cuda_toolkit_version": "12"},
        "cuda_toolkit_version is '12'; expected MAJOR.MINOR, e.g. 12.4.",
    ),
    "version-with-patch": (
        DEBIAN_13,
        {"cuda_toolkit_version": "12.4.1"},
        "cuda_toolkit_version is '12.4.1'; expected MAJOR.MINOR",
    ),
    "version-prefixed": (UBUNTU_2204, {"cuda_toolkit_version": "v12.4"}, "cuda_toolkit_version is 'v12.4'"),
    "debian-12-debian-source": (
        DEBIAN_12,
        {"cuda_toolkit_source": "debian"},
        "cuda_toolkit_source is debian, but {case} runs Debian 12.8: only the archive of Debian 13 carries CUDA 12.4 "
        "(Debian 12 has 11.8). Use Debian 13, or set cuda_toolkit_source to nvidia (NVIDIA's repository).",
    ),
    "ubuntu-debian-source": (
        UBUNTU_2404,
        {"cuda_toolkit_source": "debian"},
        "cuda_toolkit_source is debian, but {case} runs Ubuntu 24.04",
    ),
    "debian-11": (
        facts("Debian", "11.11", "Debian"),
        {},
        "{case} runs Debian 11.11, which cuda_toolkit does not support (cuda_toolkit_source is auto): NVIDIA's CUDA "
        "repository serves Debian 12, Debian 13, Ubuntu 22, Ubuntu 24, RedHat 9, Rocky 9, AlmaLinux 9.",
    ),
    "debian-version-of-other-cuda": (
        DEBIAN_13,
        {"cuda_toolkit_version": "12.6"},
        "cuda_toolkit_debian_version is '12.4.131~12.4.1-2', which is not a CUDA 12.6 build of nvidia-cuda-toolkit",
    ),
    "base-url-no-scheme": (
        UBUNTU_2204,
        {"cuda_toolkit_nvidia_repo_base_url": "developer.download.nvidia.com/compute/cuda/repos"},
        "cuda_toolkit_nvidia_repo_base_url is 'developer.download.nvidia.com/compute/cuda/repos'; expected an "
        "http:// or https:// URL",
    ),
    "arch-no-sm": (DEBIAN_13, {"cuda_toolkit_verify_arch": "90"}, "cuda_toolkit_verify_arch is '90'; expected sm_XY"),
    "fedora": (facts("Fedora", "40", "RedHat"), {}, "{case} runs Fedora 40, which cuda_toolkit does not support"),
    "ubuntu-20.04": (facts("Ubuntu", "20.04", "Debian"), {}, "{case} runs Ubuntu 20.04, which cuda_toolkit does not"),
    "rhel-8": (facts("RedHat", "8.10", "RedHat"), {}, "{case} runs RedHat 8.10, which cuda_toolkit does not"),
    "aarch64": ({**UBUNTU_2204, "architecture": "aarch64"}, {}, "{case} is aarch64; cuda_toolkit installs the x86_64"),
    # Types and choices are checked by the role's argument_specs before any task runs.
    "unknown-source": (DEBIAN_13, {"cuda_toolkit_source": "conda"}, "cuda_toolkit_source"),
    "hold-not-bool": (DEBIAN_13, {"cuda_toolkit_hold": "maybe"}, "cuda_toolkit_hold"),
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Run every case once; return (host -> failure message or None, render directory of each case)."""
    tmp = tmp_path_factory.mktemp("cuda_toolkit")
    cases = {name: (node, settings) for name, (node, settings) in RENDERED.items()}
    cases.update({name: (node, settings) for name, (node, settings, _) in REFUSED.items()})
    hosts = {
        name: {"node_facts": node, "render_dir": str(tmp / name), **settings}
        for name, (node, settings) in cases.items()
    }
    extra = {"ansible_facts": "{{ node_facts }}"}
    failures = run_role_cases(
        PLAYBOOK, tmp, "cuda_toolkit_cases", hosts, tags="cuda_toolkit_preflight,render", extra=extra
    )
    return failures, tmp


def rendered(run, case: str) -> tuple[dict, Path]:
    failures, tmp = run
    assert failures[case] is None, failures[case]
    return json.loads((tmp / case / "resolved.json").read_text()), tmp / case


# --- NVIDIA's repository: what the role writes and installs ---------------------------------------------------


@pytest.mark.parametrize(
    ("case", "repo_dir"),
    [("ubuntu-22.04", "ubuntu2204"), ("ubuntu-24.04", "ubuntu2404"), ("debian-12", "debian12")],
)
def test_apt_nodes_get_nvidia_flat_repository_signed_by_its_key(run, case, repo_dir):
    resolved, out = rendered(run, case)
    url = f"{NVIDIA}/{repo_dir}/x86_64"
    assert resolved == {
        "source": "nvidia",
        "package": "cuda-toolkit-12-4",
        "package_spec": "cuda-toolkit-12-4",
        "root": "/usr/local/cuda-12.4",
        "home": "/usr/local/cuda",
        "install_tasks": "install-Debian.yml",
        "repo_url": url,
        "key_url": f"{url}/3bf863cc.pub",
        "keyring": "/etc/apt/keyrings/cuda-archive-keyring.asc",
        "repo_file": f"/etc/apt/sources.list.d/cuda-{repo_dir}-x86_64.sources",
    }
    sources = (out / "repository").read_text()
    assert sources.startswith("#\n# Ansible managed")
    entry = [line for line in sources.splitlines() if line and not line.startswith("#")]
    assert entry == [
        "Types: deb",
        f"URIs: {url}/",
        "Suites: /",
        "Signed-By: /etc/apt/keyrings/cuda-archive-keyring.asc",
    ]


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt-get (a Debian or Ubuntu control node)")
@pytest.mark.parametrize("case", ["ubuntu-24.04", "mirror-12.6-no-link"])
def test_apt_reads_the_rendered_sources_as_a_flat_repository(run, case, tmp_path):
    """apt itself parses the file and asks for the Packages index where NVIDIA's flat repository keeps it."""
    resolved, out = rendered(run, case)
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


@pytest.mark.parametrize("case", ["rhel-9", "rocky-9"])
def test_el9_nodes_get_nvidia_rhel9_repository_and_versionlock(run, case):
    resolved, out = rendered(run, case)
    url = f"{NVIDIA}/rhel9/x86_64"
    assert resolved == {
        "source": "nvidia",
        "package": "cuda-toolkit-12-4",
        "package_spec": "cuda-toolkit-12-4",
        "root": "/usr/local/cuda-12.4",
        "home": "/usr/local/cuda",
        "install_tasks": "install-RedHat.yml",
        "repo_url": url,
        "key_url": f"{url}/D42D0685.pub",
        "keyring": "/etc/pki/rpm-gpg/RPM-GPG-KEY-NVIDIA-CUDA",
        "repo_file": "/etc/yum.repos.d/cuda-rhel9.repo",
    }
    repo = configparser.ConfigParser()
    repo.read_string((out / "repository").read_text())
    assert repo.sections() == ["cuda-rhel9-x86_64"]
    section = repo["cuda-rhel9-x86_64"]
    assert section["baseurl"] == url
    assert section["enabled"] == "1"
    assert section["gpgcheck"] == "1"
    assert section["gpgkey"] == "file:///etc/pki/rpm-gpg/RPM-GPG-KEY-NVIDIA-CUDA"
    # The RHEL install tasks trust the downloaded key and lock the version with dnf's versionlock plugin.
    repository = (REPO / "roles" / "nvidia_repo" / "tasks" / "repository.yml").read_text()
    assert "ansible.builtin.rpm_key:\n    key: \"{{ __nvidia_repo['keyring'] }}\"" in repository
    install = (ROLE / "tasks" / resolved["install_tasks"]).read_text()
    assert "python3-dnf-plugin-versionlock" in install
    assert "community.general.dnf_versionlock:" in install


def test_mirror_version_and_link_settings_flow_into_names_and_files(run):
    resolved, out = rendered(run, "mirror-12.6-no-link")
    url = "http://mirror.example.internal/cuda/repos/ubuntu2204/x86_64"
    assert resolved["repo_url"] == url
    assert resolved["key_url"] == f"{url}/3bf863cc.pub"
    assert f"URIs: {url}/\n" in (out / "repository").read_text()
    assert resolved["package"] == resolved["package_spec"] == "cuda-toolkit-12-6"
    assert resolved["root"] == resolved["home"] == "/usr/local/cuda-12.6"
    assert "export CUDA_HOME=/usr/local/cuda-12.6\n" in (out / "cuda.sh").read_text()


def test_every_resolved_install_task_file_exists(run):
    for case in RENDERED:
        resolved, _ = rendered(run, case)
        assert (ROLE / "tasks" / resolved["install_tasks"]).is_file()


def test_debian_13_from_nvidias_repository_uses_its_own_key(run):
    resolved, out = rendered(run, "debian-13-nvidia-source")
    url = f"{NVIDIA}/debian13/x86_64"
    assert (resolved["source"], resolved["package"], resolved["repo_url"]) == ("nvidia", "cuda-toolkit-13-0", url)
    assert resolved["key_url"] == f"{url}/8793F200.pub"
    assert resolved["repo_file"] == "/etc/apt/sources.list.d/cuda-debian13-x86_64.sources"
    assert f"URIs: {url}/\n" in (out / "repository").read_text()


# --- Debian 13: the Debian archive (converged for real by molecule) --------------------------------------------


def test_debian_13_takes_the_pinned_debian_package_and_no_repository(run):
    resolved, out = rendered(run, "debian-13")
    assert resolved == {
        "source": "debian",
        "package": "nvidia-cuda-toolkit",
        "package_spec": "nvidia-cuda-toolkit=12.4.131~12.4.1-2",
        "root": "/usr/local/cuda-12.4",
        "home": "/usr/local/cuda",
        "install_tasks": "install-Debian.yml",
    }
    assert not (out / "repository").exists()


# --- The login-shell profile ---------------------------------------------------------------------------------


def source_profile(profile: Path, path: str, ld_library_path: str | None) -> list[str]:
    env = {"PATH": path, **({"LD_LIBRARY_PATH": ld_library_path} if ld_library_path is not None else {})}
    # Sourced twice, as by a login shell that runs profile.d again: each directory must appear once.
    script = f'. "{profile}"; . "{profile}"; echo "$CUDA_HOME"; echo "$PATH"; echo "$LD_LIBRARY_PATH"'
    result = subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, text=True, check=True)
    return result.stdout.splitlines()


def test_profile_puts_bin_and_lib64_first_once(run):
    _, out = rendered(run, "debian-13")
    profile = out / "cuda.sh"
    assert profile.read_text().startswith("#\n# Ansible managed")
    assert source_profile(profile, "/usr/bin:/bin", None) == [
        "/usr/local/cuda",
        "/usr/local/cuda/bin:/usr/bin:/bin",
        "/usr/local/cuda/lib64",
    ]
    assert source_profile(profile, "/usr/bin:/bin", "/opt/lib") == [
        "/usr/local/cuda",
        "/usr/local/cuda/bin:/usr/bin:/bin",
        "/usr/local/cuda/lib64:/opt/lib",
    ]


# --- Preflight -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(RENDERED))
def test_supported_node_passes_preflight(run, case):
    failures, _ = run
    assert failures[case] is None, failures[case]


@pytest.mark.parametrize("case", list(REFUSED))
def test_bad_setting_or_unsupported_node_is_refused_by_name(run, case):
    failures, _ = run
    expected = REFUSED[case][2].replace("{case}", case)
    assert failures[case] is not None, f"{case} was not refused"
    assert expected in " ".join(failures[case].split())

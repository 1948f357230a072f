"""The nvidia_driver role's package selection (h100fleet.fleet.driver_packages, behind the role's filter plugin):
what to hold or lock, which holds or locks to lift, what the repository offers, the version patterns and package
specs, from recorded dpkg-query, rpm, dnf versionlock, apt-cache madison and dnf repoquery output. Plain function
calls; tests/unit/test_nvidia_driver_render.py checks that the role's variables call these functions.
"""

from __future__ import annotations

import re

import pytest

from h100fleet.fleet import driver_packages as packages

NVIDIA = "https://developer.download.nvidia.com/compute/cuda/repos"

# The name patterns and source packages of each OS (roles/nvidia_driver/vars/<source>-<OS>.yml), branch 550.
UBUNTU_NAMES = ["*nvidia*-550", "*nvidia*-550-open", "nvidia-firmware-550-*"]
DEBIAN_12_NAMES = ["*nvidia*", "libcuda*"]
DEBIAN_13_SOURCES = ["nvidia-graphics-drivers", "nvidia-open-gpu-kernel-modules", "nvidia-persistenced"]
RHEL_NAMES = ["*nvidia*"]

# --- Recorded command output (fixtures) ---------------------------------------------------------------------
# dpkg-query --showformat='${binary:Package} ${source:Package} ${Version} ${db:Status-Abbrev}\n'
UBUNTU_BEFORE = [
    "nvidia-utils-550 nvidia-graphics-drivers-550 550.144.03-0ubuntu1 hi ",
    "libnvidia-compute-550:amd64 nvidia-graphics-drivers-550 550.144.03-0ubuntu1 hi ",
    "nvidia-fabricmanager-550 fabricmanager 550.144.03-1 hi ",
    "nvidia-kernel-common-550 nvidia-graphics-drivers-550 550.163.01-0ubuntu1 hi ",
    "nvidia-container-toolkit nvidia-container-toolkit 1.17.8-1 hi ",
    "nvidia-utils-535 nvidia-graphics-drivers-535 535.230.02-0ubuntu1 hi ",
    "nvidia-headless-550-open nvidia-graphics-drivers-550 550.144.03-0ubuntu1 ii ",
    "openssh-server openssh 1:9.6p1-3ubuntu13 hi ",
]
UBUNTU_AFTER = [
    "nvidia-headless-550-open nvidia-graphics-drivers-550 550.163.01-0ubuntu1 ii ",
    "nvidia-dkms-550-open nvidia-graphics-drivers-550 550.163.01-0ubuntu1 ii ",
    "nvidia-utils-550 nvidia-graphics-drivers-550 550.163.01-0ubuntu1 ii ",
    "libnvidia-compute-550:amd64 nvidia-graphics-drivers-550 550.163.01-0ubuntu1 ii ",
    "nvidia-firmware-550-550.163.01 nvidia-graphics-drivers-550 550.163.01-0ubuntu1 ii ",
    "nvidia-fabricmanager-550 fabricmanager 550.163.01-1 hi ",
    "nvidia-container-toolkit nvidia-container-toolkit 1.17.8-1 ii ",
    "nvidia-utils-535 nvidia-graphics-drivers-535 535.230.02-0ubuntu1 ii ",
    "nvidia-kernel-source-550 nvidia-graphics-drivers-550 550.163.01-0ubuntu1 rc ",
    "dkms dkms 3.0.11-1ubuntu13 ii ",
]
UBUNTU_HELD = [
    "nvidia-headless-550-open",
    "nvidia-dkms-550-open",
    "nvidia-utils-550",
    "libnvidia-compute-550:amd64",
    "nvidia-firmware-550-550.163.01",
    "nvidia-fabricmanager-550",
]
DEBIAN_13_BEFORE = [
    "nvidia-smi nvidia-graphics-drivers 550.54.14-1 hi ",
    "nvidia-persistenced nvidia-persistenced 550.163.01-1 hi ",
    "nvidia-modprobe nvidia-modprobe 550.54.14-1 hi ",
    "glx-alternative-nvidia glx-alternative-nvidia 1.2.2 ii ",
]
DEBIAN_13_AFTER = [
    "nvidia-smi nvidia-graphics-drivers 550.163.01-2 ii ",
    "libcuda1:amd64 nvidia-graphics-drivers 550.163.01-2 ii ",
    "nvidia-open-kernel-dkms nvidia-open-gpu-kernel-modules 550.163.01-1 ii ",
    "nvidia-persistenced nvidia-persistenced 550.163.01-1 hi ",
    "nvidia-modprobe nvidia-modprobe 550.54.14-1 ii ",
    "nvidia-kernel-support nvidia-graphics-drivers 550.163.01-2 ii ",
]
DEBIAN_12_BEFORE = [
    "nvidia-smi nvidia-graphics-drivers 550.144.03-1 hi ",
    "nvidia-container-toolkit nvidia-container-toolkit 1.17.8-1 hi ",
    "libcuda1:amd64 nvidia-graphics-drivers 550.144.03-1 hi ",
]
DEBIAN_12_AFTER = [
    "nvidia-driver-cuda nvidia-graphics-drivers 550.163.01-1 ii ",
    "libcuda1:amd64 nvidia-graphics-drivers 550.163.01-1 ii ",
    "libnvidia-ml1:amd64 nvidia-graphics-drivers 550.163.01-1 ii ",
    "nvidia-kernel-open-dkms nvidia-open-gpu-kernel-modules 550.163.01-1 ii ",
    "nvidia-fabricmanager-550 fabricmanager 550.163.01-1 ii ",
    "nvidia-container-toolkit nvidia-container-toolkit 1.17.8-1 ii ",
    "dkms dkms 3.0.10-8+deb12u1 ii ",
]
# rpm --query --all --queryformat '%{NAME} %{VERSION}-%{RELEASE}\n'
RHEL_AFTER = [
    "kmod-nvidia-open-dkms 550.163.01-1.el9",
    "nvidia-driver-cuda 550.163.01-1.el9",
    "nvidia-driver-cuda-libs 550.163.01-1.el9",
    "nvidia-kmod-common 550.163.01-1.el9",
    "nvidia-persistenced 550.163.01-1.el9",
    "nvidia-fabric-manager 550.163.01-1",
    "nvidia-container-toolkit 1.17.8-1",
    "dnf-plugin-nvidia 2.2-1.el9",
    "kernel 5.14.0-427.13.1.el9_4",
    "dkms 3.1.5-1.el9",
]
# dnf --quiet versionlock list
RHEL_LOCKLIST = [
    "nvidia-driver-cuda-3:550.144.03-1.el9.*",
    "kmod-nvidia-open-dkms-3:550.144.03-1.el9.*",
    "nvidia-fabric-manager-0:550.144.03-1.*",
    "nvidia-driver-cuda-libs-3:550.163.01-1.el9.*",
    "nvidia-container-toolkit-0:1.17.8-1.*",
    "cuda-toolkit-12-4-0:12.4.1-1.*",
    "kernel-0:5.14.0-427.13.1.el9_4.*",
]
# apt-cache madison nvidia-utils-550 nvidia-fabricmanager-550 (NVIDIA's repository and Ubuntu's archive)
UBUNTU_OFFER = [
    f" nvidia-utils-550 | 550.170.02-0ubuntu1 | {NVIDIA}/ubuntu2204/x86_64  Packages",
    f" nvidia-utils-550 | 550.163.01-0ubuntu1 | {NVIDIA}/ubuntu2204/x86_64  Packages",
    " nvidia-utils-550 | 550.163.01-0ubuntu0.22.04.1 | http://archive.ubuntu.com/ubuntu jammy-updates/restricted amd64"
    " Packages",
    f" nvidia-fabricmanager-550 | 550.170.02-1 | {NVIDIA}/ubuntu2204/x86_64  Packages",
    f" nvidia-fabricmanager-550 | 550.144.03-1 | {NVIDIA}/ubuntu2204/x86_64  Packages",
]
UBUNTU_OFFER_MATCHING = [
    *UBUNTU_OFFER,
    f" nvidia-fabricmanager-550 | 550.163.01-1 | {NVIDIA}/ubuntu2204/x86_64  Packages",
]
# dnf --quiet repoquery --queryformat '%{name} | %{version}-%{release} |' nvidia-driver-cuda nvidia-fabric-manager
RHEL_OFFER = [
    "nvidia-driver-cuda | 550.144.03-1.el9 |",
    "nvidia-driver-cuda | 550.163.01-1.el9 |",
    "nvidia-fabric-manager | 550.144.03-1 |",
    "nvidia-fabric-manager | 550.163.01-1 |",
]


# --- Holds (apt) ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after", "kept_by", "release", "hold"),
    [
        (
            UBUNTU_BEFORE,
            UBUNTU_AFTER,
            (UBUNTU_NAMES, []),
            ["nvidia-utils-550", "libnvidia-compute-550:amd64", "nvidia-fabricmanager-550"],
            UBUNTU_HELD,
        ),
        (
            DEBIAN_12_BEFORE,
            DEBIAN_12_AFTER,
            (DEBIAN_12_NAMES, []),
            ["nvidia-smi", "libcuda1:amd64"],
            [
                "nvidia-driver-cuda",
                "libcuda1:amd64",
                "libnvidia-ml1:amd64",
                "nvidia-kernel-open-dkms",
                "nvidia-fabricmanager-550",
            ],
        ),
        (
            DEBIAN_13_BEFORE,
            DEBIAN_13_AFTER,
            ([], DEBIAN_13_SOURCES),
            ["nvidia-smi"],
            ["nvidia-smi", "libcuda1:amd64", "nvidia-open-kernel-dkms", "nvidia-persistenced", "nvidia-kernel-support"],
        ),
    ],
    ids=["ubuntu", "debian-12", "debian-13"],
)
def test_holds_released_and_set_only_on_the_drivers_packages(before, after, kept_by, release, hold):
    """Released: held driver packages at another driver version; never nvidia-container-toolkit, another branch or
    packages outside the driver. Held: the driver's installed packages at the configured version (not "rc")."""
    names, sources = kept_by
    assert packages.apt_release(before, "550.163.01", names, sources) == release
    assert packages.apt_hold(after, "550.163.01", names, sources) == hold


def test_a_branch_holds_every_installed_version_of_the_branch_and_releases_none_of_it():
    assert packages.apt_release(UBUNTU_BEFORE, "550", UBUNTU_NAMES, []) == []
    held = packages.apt_hold(UBUNTU_AFTER, "550", UBUNTU_NAMES, [])
    assert held == UBUNTU_HELD  # nvidia-utils-535 is another branch: its name does not match the patterns


def test_580_holds_the_580_packages_and_releases_the_550_ones():
    """A 550 -> 580 bump on Ubuntu: the 580 names are other packages; the 550 holds are lifted only where the
    patterns of the configured branch match them (they do not: 550 packages stay held, apt removes them)."""
    before = ["nvidia-utils-580 nvidia-graphics-drivers-580 580.95.05-0ubuntu1 hi ", *UBUNTU_BEFORE]
    names = ["*nvidia*-580", "*nvidia*-580-open", "nvidia-firmware-580-*"]
    assert packages.apt_release(before, "580.159.04", names, []) == ["nvidia-utils-580"]
    after = [
        "nvidia-headless-580-open nvidia-graphics-drivers-580 580.159.04-0ubuntu1 ii ",
        "nvidia-utils-580 nvidia-graphics-drivers-580 580.159.04-0ubuntu1 ii ",
        "nvidia-firmware-580-580.159.04 nvidia-graphics-drivers-580 580.159.04-0ubuntu1 ii ",
        "nvidia-utils-550 nvidia-graphics-drivers-550 550.163.01-0ubuntu1 hi ",
    ]
    assert packages.apt_hold(after, "580.159.04", names, []) == [
        "nvidia-headless-580-open",
        "nvidia-utils-580",
        "nvidia-firmware-580-580.159.04",
    ]


# --- Version locks (dnf) ------------------------------------------------------------------------------------------


def test_el9_versionlock_locks_the_drivers_packages_and_lifts_stale_locks():
    assert packages.dnf_lock(RHEL_AFTER, "550.163.01", RHEL_NAMES) == [
        "kmod-nvidia-open-dkms-550.163.01-1.el9",
        "nvidia-driver-cuda-550.163.01-1.el9",
        "nvidia-driver-cuda-libs-550.163.01-1.el9",
        "nvidia-kmod-common-550.163.01-1.el9",
        "nvidia-persistenced-550.163.01-1.el9",
        "nvidia-fabric-manager-550.163.01-1",
    ]
    assert packages.dnf_unlock(RHEL_LOCKLIST, "550.163.01", RHEL_NAMES) == [
        "nvidia-driver-cuda-3:550.144.03-1.el9.*",
        "kmod-nvidia-open-dkms-3:550.144.03-1.el9.*",
        "nvidia-fabric-manager-0:550.144.03-1.*",
    ]


def test_el9_580_locks_lift_every_550_lock():
    after = ["nvidia-driver-cuda 580.159.04-1.el9", "nvidia-fabricmanager 580.159.04-1", "kernel 5.14.0-427.el9"]
    assert packages.dnf_lock(after, "580", RHEL_NAMES) == [
        "nvidia-driver-cuda-580.159.04-1.el9",
        "nvidia-fabricmanager-580.159.04-1",
    ]
    locklist = [f"  {entry}  " for entry in RHEL_LOCKLIST]  # dnf indents some entries
    assert packages.dnf_unlock(locklist, "580", RHEL_NAMES) == [
        "nvidia-driver-cuda-3:550.144.03-1.el9.*",
        "kmod-nvidia-open-dkms-3:550.144.03-1.el9.*",
        "nvidia-fabric-manager-0:550.144.03-1.*",
        "nvidia-driver-cuda-libs-3:550.163.01-1.el9.*",
    ]


# --- What the repository offers -----------------------------------------------------------------------------------


def test_repository_offers_are_read_from_madison_and_repoquery():
    driver = packages.offered(UBUNTU_OFFER, "nvidia-utils-550")
    assert driver == ["550.170.02-0ubuntu1", "550.163.01-0ubuntu1", "550.163.01-0ubuntu0.22.04.1"]
    fabric = packages.offered(UBUNTU_OFFER, "nvidia-fabricmanager-550")
    assert fabric == ["550.170.02-1", "550.144.03-1"]
    assert packages.offers(driver, "550.163.01")
    # No fabric manager 550.163.01 in the repository: the install stops before any package changes.
    assert not packages.offers(fabric, "550.163.01")
    assert packages.offers(packages.offered(UBUNTU_OFFER_MATCHING, "nvidia-fabricmanager-550"), "550.163.01")
    # A branch resolves to the newest 550 (550.170.02), for which fabric manager is offered.
    assert packages.offers(fabric, "550.170.02")
    rhel = packages.offered(RHEL_OFFER, "nvidia-driver-cuda")
    assert rhel == ["550.144.03-1.el9", "550.163.01-1.el9"]
    assert packages.offers(packages.offered(RHEL_OFFER, "nvidia-fabric-manager"), "550.163.01")
    # Nothing offered (an empty mirror): refused, not installed blindly.
    assert not packages.offers(packages.offered([], "nvidia-driver-cuda"), "550")
    # A package whose name starts like another's is not it.
    assert packages.offered([" nvidia-utils-550-server | 550.1-1 | x"], "nvidia-utils-550") == []


# --- Versions and specs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "glob", "matches", "misses"),
    [
        ("550.163.01", "550.163.01-*", ["550.163.01-0ubuntu1", "550.163.01-1.el9"], ["550.170.02-0ubuntu1"]),
        ("550", "550.*", ["550.170.02-0ubuntu1", "550.54.15-1"], ["555.42.02-1", "5500.1-1", "1:550.1-1"]),
        ("580.159.04", "580.159.04-*", ["580.159.04-1"], ["580.159.040-1", "580.159.04"]),
        ("580", "580.*", ["580.159.04-1.el9"], ["58.0-1", "5800.1-1"]),
    ],
)
def test_version_pattern_for_the_pin_and_the_checks(version, glob, matches, misses):
    assert packages.version_glob(version) == glob
    assert all(packages.matches(v, version) for v in matches)
    assert not any(packages.matches(v, version) for v in misses)


@pytest.mark.parametrize(
    ("names", "version", "family", "specs"),
    [
        (
            ["nvidia-headless-580-open", "nvidia-utils-580"],
            "580.159.04",
            "Debian",
            ["nvidia-headless-580-open=580.159.04-*", "nvidia-utils-580=580.159.04-*"],
        ),
        (
            ["kmod-nvidia-open-dkms", "nvidia-driver-cuda"],
            "580.159.04",
            "RedHat",
            ["kmod-nvidia-open-dkms-580.159.04", "nvidia-driver-cuda-580.159.04"],
        ),
        (["nvidia-driver-cuda"], "580", "RedHat", ["nvidia-driver-cuda"]),
    ],
)
def test_install_specs(names, version, family, specs):
    assert packages.install_specs(names, version, family) == specs


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: packages.version_glob("550.x"), "nvidia_driver_version is '550.x'; expected a branch"),
        (lambda: packages.matches("550.1-1", " 550"), "nvidia_driver_version is ' 550'"),
        (lambda: packages.apt_hold([], "550", [], []), "need name patterns or source packages"),
        (lambda: packages.dnf_lock([], "550", []), "need name patterns"),
        (lambda: packages.package_spec("x", "550.1", "Suse"), "no package spec for os_family 'Suse'"),
    ],
)
def test_bad_input_is_refused_by_name(call, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        call()

"""Which of a node's packages are the NVIDIA driver's, at which version: the nvidia_driver role's package selection.

The role lists what the package manager knows (dpkg-query, rpm, dnf versionlock, apt-cache madison / dnf
repoquery) and these pure functions pick from that output, through the role's filter plugin
(roles/nvidia_driver/filter_plugins/nvidia_driver.py): what to hold or lock at the configured version, which holds
or locks to lift when the version moves, which versions the repository offers. A package is the driver's when its
name matches one of the OS's name patterns (NVIDIA's repository: "*nvidia*", "libcuda*", ...) or its source
package is one of the driver's (Debian's archive), and it is at a driver version: other NVIDIA software
(nvidia-container-toolkit at 1.x) matches the names but never the version.

Versions: `version` is a branch ("550": any 550.x) or an exact version ("550.163.01": that upstream version, any
Debian revision or RPM release).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

_EXACT = re.compile(r"^[0-9]+\.[0-9]+(\.[0-9]+)?$")
_BRANCH = re.compile(r"^[0-9]+$")
# A driver version of any branch (three-digit branch): other NVIDIA software (nvidia-container-toolkit 1.x) is not.
_ANY_DRIVER = r"[0-9]{3}\.[^ ]*"
# "<name> | <version> | ..." lines of apt-cache madison (and of dnf repoquery given the same format).
_OFFER = re.compile(r"^\s*([^ |]+)\s*\|\s*([^ |]+)\s*\|")


def _version(version: str) -> str:
    text = str(version)
    if not (_EXACT.match(text) or _BRANCH.match(text)):
        raise ValueError(
            f"nvidia_driver_version is {text!r}; expected a branch such as '550' or an exact version such as "
            "'550.163.01'"
        )
    return text


def is_exact(version: str) -> bool:
    """An exact version ("550.163.01"), not a branch ("550")."""
    return bool(_EXACT.match(_version(version)))


def version_glob(version: str) -> str:
    """apt's version glob for the pin: "550.163.01-*" (any Debian revision) or "550.*" (the branch)."""
    return _version(version) + ("-*" if is_exact(version) else ".*")


def _version_re(version: str) -> str:
    """The glob as a regular expression over "<version>-<revision or release>" (a version has no space)."""
    return re.escape(version_glob(version)).replace(r"\*", "[^ ]*")


def matches(package_version: str, version: str) -> bool:
    """Whether a package version ("550.163.01-0ubuntu1", "550.163.01-1.el9") is at the configured version."""
    return re.match(f"^{_version_re(version)}$", str(package_version)) is not None


def _names_re(names: Sequence[str]) -> str:
    return "(?:" + "|".join(re.escape(n).replace(r"\*", "[^ ]*") for n in names) + ")"


def _driver_line(names: Sequence[str], sources: Sequence[str]) -> re.Pattern[str]:
    """dpkg-query lines "<package>[:arch] <source> <version> <status>" of a package named like the driver's or
    built from one of its source packages."""
    alternatives = []
    if names:
        alternatives.append(_names_re(names) + "(?::[a-z0-9]+)? [^ ]+")
    if sources:
        alternatives.append("[^ ]+ (?:" + "|".join(re.escape(s) for s in sources) + ")")
    if not alternatives:
        raise ValueError("the driver's packages need name patterns or source packages (both lists are empty)")
    return re.compile("^(?:" + "|".join(alternatives) + ")[ ]")


def apt_release(lines: Iterable[str], version: str, names: Sequence[str], sources: Sequence[str]) -> list[str]:
    """Before the install: the driver's packages held ("hi") at another driver version, whose holds are lifted so
    that apt can move them to the configured one."""
    line = _driver_line(names, sources)
    other = re.compile(f"^[^ ]+ [^ ]+ (?!{_version_re(version)} ){_ANY_DRIVER} hi")
    return [entry.split(" ")[0] for entry in lines if line.search(entry) and other.search(entry)]


def apt_hold(lines: Iterable[str], version: str, names: Sequence[str], sources: Sequence[str]) -> list[str]:
    """After the install: the driver's installed packages ("ii", or already held "hi") at the configured version."""
    line = _driver_line(names, sources)
    wanted = re.compile(f"^[^ ]+ [^ ]+ {_version_re(version)} [ih]i")
    return [entry.split(" ")[0] for entry in lines if line.search(entry) and wanted.search(entry)]


def dnf_lock(lines: Iterable[str], version: str, names: Sequence[str]) -> list[str]:
    """After the install: rpm lines "<name> <version>-<release>" of the driver's packages at the configured
    version, as versionlock specs "<name>-<version>-<release>" (the plugin locks the installed build)."""
    if not names:
        raise ValueError("the driver's packages need name patterns (the list is empty)")
    wanted = re.compile(f"^({_names_re(names)}) ({_version_re(version)})$")
    return [f"{m[1]}-{m[2]}" for m in map(wanted.match, lines) if m]


def dnf_unlock(lines: Iterable[str], version: str, names: Sequence[str]) -> list[str]:
    """Before the install: versionlock entries "<name>-<epoch>:<version>-<release>.*" of the driver's packages at
    another driver version, deleted so that dnf can install the configured one."""
    if not names:
        raise ValueError("the driver's packages need name patterns (the list is empty)")
    any_driver = re.compile(f"^{_names_re(names)}-(?:[0-9]+:)?{_ANY_DRIVER}$")
    configured = re.compile(f"^{_names_re(names)}-(?:[0-9]+:)?{_version_re(version)}$")
    entries = (entry.strip() for entry in lines)
    return [e for e in entries if any_driver.search(e) and not configured.search(e)]


def offered(lines: Iterable[str], package: str) -> list[str]:
    """The versions of `package` in "<name> | <version> | ..." lines, in the order listed."""
    return [m[2] for m in map(_OFFER.match, lines) if m and m[1] == package]


def offers(versions: Iterable[str], version: str) -> bool:
    """Whether one of `versions` is at the configured version (or, for a branch, of the branch)."""
    return any(matches(v, version) for v in versions)


def package_spec(name: str, version: str, os_family: str) -> str:
    """A package at an upstream version: apt "name=550.163.01-*", dnf "name-550.163.01"."""
    if os_family == "Debian":
        return f"{name}={version}-*"
    if os_family == "RedHat":
        return f"{name}-{version}"
    raise ValueError(f"no package spec for os_family {os_family!r}; expected Debian or RedHat")


def install_specs(names: Sequence[str], version: str, os_family: str) -> list[str]:
    """What the install task asks for: each name at the exact version, or the bare names for a branch (the pin or
    the module stream keeps them on the branch)."""
    if not is_exact(version):
        return list(names)
    return [package_spec(name, version, os_family) for name in names]

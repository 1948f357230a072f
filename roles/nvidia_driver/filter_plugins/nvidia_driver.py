"""Filters for the nvidia_driver role: a thin shim over h100fleet.fleet.driver_packages (package selection) and
h100fleet.probes.drivers (the driver table), both unit-tested there."""

from __future__ import annotations

from datetime import date

from ansible.errors import AnsibleFilterError

try:
    from h100fleet.fleet import driver_packages as packages
    from h100fleet.probes import drivers
except ImportError as exc:  # pragma: no cover - only without the project's environment
    raise ImportError(
        "nvidia_driver needs the h100fleet package on the control node: run ansible-playbook from the project's "
        "environment (.venv)"
    ) from exc


def _filter(function):
    def wrapped(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except (ValueError, TypeError) as exc:
            raise AnsibleFilterError(f"nvidia_driver: {exc}") from exc

    wrapped.__name__ = function.__name__
    wrapped.__doc__ = function.__doc__
    return wrapped


def nvidia_driver_check(version, cuda):
    """version | nvidia_driver_check(cuda): what the driver table says of a driver setting for this CUDA today."""
    return drivers.driver_check(str(version), str(cuda), date.today())


class FilterModule:
    def filters(self):
        return {
            name: _filter(function)
            for name, function in {
                "nvidia_driver_check": nvidia_driver_check,
                "nvidia_driver_is_exact": packages.is_exact,
                "nvidia_driver_version_glob": packages.version_glob,
                "nvidia_driver_version_matches": packages.matches,
                "nvidia_driver_apt_release": packages.apt_release,
                "nvidia_driver_apt_hold": packages.apt_hold,
                "nvidia_driver_dnf_lock": packages.dnf_lock,
                "nvidia_driver_dnf_unlock": packages.dnf_unlock,
                "nvidia_driver_offered": packages.offered,
                "nvidia_driver_offers": packages.offers,
                "nvidia_driver_package_spec": packages.package_spec,
                "nvidia_driver_install_specs": packages.install_specs,
            }.items()
        }

"""Filters for the gpu_validate role: a thin shim over h100fleet.fleet.validation and h100fleet.fleet.files
(unit-tested there)."""

from __future__ import annotations

try:
    from h100fleet.fleet import files, validation
except ImportError as exc:  # pragma: no cover - only without the project's environment
    raise ImportError(
        "gpu_validate needs the h100fleet package on the control node: run ansible-playbook from the project's "
        "environment (.venv)"
    ) from exc


def gpu_validate_rows(hostvars, hosts):
    return validation.rows(hostvars, hosts)


def gpu_validate_probe_modules(package):
    """'h100fleet.probes' | gpu_validate_probe_modules: the module files the role copies to the node."""
    if package != "h100fleet.probes":
        raise ValueError(f"gpu_validate_probe_modules lists the modules of h100fleet.probes, not of {package!r}")
    return validation.probe_modules()


class FilterModule:
    def filters(self):
        return {
            "gpu_validate_rows": gpu_validate_rows,
            "gpu_validate_markdown": validation.markdown,
            "gpu_validate_probe_modules": gpu_validate_probe_modules,
            "gpu_validate_stale_files": files.stale_files,
        }

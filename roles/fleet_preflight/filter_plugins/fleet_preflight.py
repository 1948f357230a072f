"""Filters for the fleet_preflight role: a thin shim over h100fleet.fleet.preflight (unit-tested there)."""

from __future__ import annotations

try:
    from h100fleet.fleet import preflight
except ImportError as exc:  # pragma: no cover - only without the project's environment
    raise ImportError(
        "fleet_preflight needs the h100fleet package: run ansible-playbook from the project's environment"
    ) from exc


class FilterModule:
    def filters(self):
        return {
            "fleet_preflight_report": preflight.report,
            "fleet_preflight_message": preflight.message,
            "fleet_preflight_messages": preflight.messages,
        }

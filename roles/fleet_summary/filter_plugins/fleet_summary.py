"""Filters for the fleet_summary role: a thin shim over h100fleet.fleet.summary (unit-tested there)."""

from __future__ import annotations

try:
    from h100fleet.fleet import summary
except ImportError as exc:  # pragma: no cover - only without the project's environment
    raise ImportError(
        "fleet_summary needs the h100fleet package: run ansible-playbook from the project's environment "
        "(`uv run ansible-playbook ...` in the repository)"
    ) from exc


def fleet_summary_rows(hostvars, all_hosts, ok_hosts):
    return summary.rows(all_hosts, ok_hosts, hostvars)


class FilterModule:
    def filters(self):
        return {"fleet_summary_rows": fleet_summary_rows, "fleet_summary_markdown": summary.markdown}

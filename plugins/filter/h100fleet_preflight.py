"""Filters every role's preflight uses to collect all of its problems on a host and refuse once, naming them all.

A thin shim over h100fleet.fleet.preflight (unit-tested there):
  problems | h100fleet_problem(variable, message): the list with one more problem;
  problems | h100fleet_clean(variable, ...): true when no problem so far names any of them (a check that reads a
    variable runs only when that variable's earlier checks passed);
  problems | h100fleet_refusal: one line per problem, the message of the role's refusal.
"""

from __future__ import annotations

try:
    from h100fleet.fleet import preflight
except ImportError as exc:  # pragma: no cover - only without the project's environment
    raise ImportError(
        "h100fleet_preflight needs the h100fleet package: run ansible-playbook from the project's environment"
    ) from exc


class FilterModule:
    def filters(self):
        return {
            "h100fleet_problem": preflight.problem,
            "h100fleet_clean": preflight.clean,
            "h100fleet_refusal": preflight.refusal,
        }

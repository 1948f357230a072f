"""Filters for the rollout role: a thin shim over h100fleet.fleet.rollout (unit-tested there)."""

from __future__ import annotations

try:
    from h100fleet.fleet import rollout
except ImportError as exc:  # pragma: no cover - only without the project's environment
    raise ImportError(
        "rollout needs the h100fleet package on the control node: run ansible-playbook from the project's "
        "environment (.venv)"
    ) from exc


def rollout_probe_verdict(report, gpu_required, fail_on=("CRIT",)):
    return rollout.probe_verdict(report, bool(gpu_required), list(fail_on))


def rollout_training_progress(status, step_before):
    return rollout.training_progress(status, None if step_before in (None, "") else int(step_before))


def rollout_initial_records(hostvars, hosts, stack):
    """One record per target for the start of the report: skipped when preflight found it on the new stack."""
    out = []
    for host in hosts:
        hv = hostvars[host]
        on_new = str(hv.get("__rollout_on_new", False)).strip().lower() in ("true", "1", "yes")
        status = "skipped" if on_new else "untouched"
        out.append({"host": host, "old_stack": hv.get("__rollout_old_stack"), "new_stack": stack, "status": status})
    return out


def rollout_batch_number(host, hosts, serial):
    return rollout.batch_number(host, list(hosts), list(serial))


class FilterModule:
    def filters(self):
        return {
            "rollout_probe_verdict": rollout_probe_verdict,
            "rollout_training_progress": rollout_training_progress,
            "rollout_downtime": rollout.downtime_s,
            "rollout_phases": rollout.phases_s,
            "rollout_batch_number": rollout_batch_number,
            "rollout_initial_records": rollout_initial_records,
        }

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


def _on_new(hv):
    """The preflight's verdict that a host already runs the new stack (a fact rendered to text)."""
    return str(hv.get("__rollout_on_new", False)).strip().lower() in ("true", "1", "yes")


def rollout_initial_records(hostvars, hosts, stack):
    """One record per target for the start of the report: skipped when preflight found it on the new stack."""
    out = []
    for host in hosts:
        hv = hostvars[host]
        status = "skipped" if _on_new(hv) else "untouched"
        journal = hv.get("__rollout_journal") or {}
        note = None
        if rollout.journal_state(journal) == "open":
            note = "an earlier flip did not finish (its journal is open): this run finishes it or rolls it back"
        elif rollout.journal_state(journal) == "recovered":
            note = (
                f"the node-side guard put it back on {journal.get('recovered_to')} after an earlier flip did not "
                "finish: this run confirms it and moves it"
            )
        out.append(
            {
                "host": host,
                "old_stack": hv.get("__rollout_old_stack"),
                "new_stack": stack,
                "status": status,
                "note": note,
            }
        )
    return out


def rollout_batch_number(host, hosts, serial):
    return rollout.batch_number(host, list(hosts), list(serial))


def rollout_job_batches(hostvars, hosts):
    """What rollout.job_batch_problem needs, read once for the whole play: the hosts not yet on the new stack
    (pending, in order) and each host's job where training_service_nnodes > 1 (its training_service_job_group)."""
    pending = [h for h in hosts if not _on_new(hostvars[h])]
    jobs = {}
    for h in hosts:
        hv = hostvars[h]
        group = hv.get("training_service_job_group") or ""
        if group and int(hv.get("training_service_nnodes", 1) or 1) > 1:
            jobs[h] = str(group)
    return {"pending": pending, "jobs": jobs}


def rollout_job_batch_problem(host, job_batches, serial):
    return rollout.job_batch_problem(host, list(job_batches["pending"]), list(serial), dict(job_batches["jobs"]))


def rollout_journal_open(existing, kind, active, previous, to, was_active, now, timeout):  # noqa: PLR0917 (a filter's arguments)
    return rollout.journal_open(
        existing or None,
        kind=kind,
        active=active,
        previous=previous or None,
        to=to,
        was_active=was_active,
        now=now,
        timeout=timeout,
    )


def rollout_lost_hosts(hostvars, hosts_all, hosts_active, serial, batch):
    """The hosts of this play's batches up to `batch` that Ansible lost: not among the play's active hosts and not
    in a rescue of this run (batch-mates sent to their rescue leave the active hosts too)."""
    hosts_all = list(hosts_all)
    out = []
    for host in hosts_all:
        number = rollout.batch_number(host, hosts_all, list(serial))
        if number is None or number > int(batch) or host in hosts_active:
            continue
        if str(hostvars[host].get("__rollout_in_rescue", False)).lower() == "true":
            continue
        out.append(host)
    return out


def rollout_rollback_outcomes(hostvars, hosts_all, hosts_active):
    """rollback.yml's outcome per node: {"outcomes": {host: text}, "lost": [...], "problems": ["host: text"]}. A
    host missing from the active ones, or that noted itself unreachable, was lost."""
    outcomes = {}
    for host in hosts_all:
        if host not in hosts_active:
            outcomes[host] = "unreachable (state unknown): lost during the rollback"
        else:
            outcomes[host] = str(hostvars[host].get("__rollout_rb_outcome") or "failed: not visited")
    lost = [h for h, text in outcomes.items() if text.startswith("unreachable")]
    problems = [f"{h}: {text}" for h, text in outcomes.items() if text.startswith(("unreachable", "refused", "failed"))]
    return {"outcomes": outcomes, "lost": lost, "problems": problems}


class FilterModule:
    def filters(self):
        return {
            "rollout_probe_verdict": rollout_probe_verdict,
            "rollout_training_progress": rollout_training_progress,
            "rollout_downtime": rollout.downtime_s,
            "rollout_phases": rollout.phases_s,
            "rollout_batch_number": rollout_batch_number,
            "rollout_job_batches": rollout_job_batches,
            "rollout_job_batch_problem": rollout_job_batch_problem,
            "rollout_initial_records": rollout_initial_records,
            "rollout_journal_open": rollout_journal_open,
            "rollout_journal_step": rollout.journal_step,
            "rollout_journal_close": rollout.journal_close,
            "rollout_journal_unfinished": rollout.journal_unfinished,
            "rollout_same_stack": rollout.same_stack,
            "rollout_rollback_target": rollout.rollback_target,
            "rollout_lost_hosts": rollout_lost_hosts,
            "rollout_rollback_outcomes": rollout_rollback_outcomes,
        }

"""The fleet rollout report: per-node records of a stack (or driver) rollout, rendered as Markdown, JSON and HTML.

The rollout playbook (playbooks/rollout.yml, role `rollout`) writes one record per node on the control node and
re-renders the report after every node, so a halted rollout still leaves a report that names the nodes still on
the old stack. Layout of a report directory:

    <dir>/rollout.json            the run: target stack, driver, canary, batch, hosts, started_at
    <dir>/nodes/<host>.json       one record per node (below)
    <dir>/rollout-report.md|.json|.html

A record: host, old_stack, new_stack, status (done / skipped / rolled-back / rollback-failed / unreachable /
reverted / untouched), batch,
downtime_s (service stop until the training step advanced again), phases_s (where the downtime went: stop,
switch, driver, probe, start = from the end of the probes until the trainer's first step past the checkpoint),
step_before (the checkpointed step at the stop), step_after (the first step seen after the start), probe_status,
gemm_tflops (slowest GPU), service_state, driver_before and driver_after (the loaded driver's version), error,
note, was_active (whether the trainer ran before the flip).

    python -m h100fleet.fleet.rollout init --dir D < {"rollout": {...}, "records": [...]}
    python -m h100fleet.fleet.rollout record --dir D [--update] < {record}  # write one record, render the report
    python -m h100fleet.fleet.rollout lost --dir D --reason TEXT HOST...   # nodes lost: unreachable (state unknown)
    python -m h100fleet.fleet.rollout render --dir D

The module also holds the flip journal's logic (journal_*, rollback_target): what a node records on itself before
its trainer is stopped, and how a re-run, rollback.yml and the node-side guard read it.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import html
import json
import os
import statistics
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from h100fleet.fleet import MISSING, markdown_table

SCHEMA = 1
DONE = "done"
SKIPPED = "skipped"
ROLLED_BACK = "rolled-back"
ROLLBACK_FAILED = "rollback-failed"
UNTOUCHED = "untouched"
# Lost during the run (Ansible could not reach it): what it runs is unknown until a run reaches it again.
UNREACHABLE = "unreachable"
# Switched back to the stack it came from by playbooks/rollback.yml.
REVERTED = "reverted"
STATUSES = (DONE, SKIPPED, ROLLED_BACK, ROLLBACK_FAILED, UNREACHABLE, REVERTED, UNTOUCHED)
# Where a node of each status runs after the rollout: the new stack, or not (the old one, or unknown).
ON_NEW = frozenset({DONE, SKIPPED})
# Statuses that halt a rollout: a node that failed, or one whose state nobody knows.
HALTING = (ROLLED_BACK, ROLLBACK_FAILED, UNREACHABLE)
DOWNTIME_TARGET_S = 90.0

RECORD_FIELDS = (
    "host",
    "old_stack",
    "new_stack",
    "status",
    "batch",
    "downtime_s",
    "phases_s",
    "step_before",
    "step_after",
    "probe_status",
    "gemm_tflops",
    "service_state",
    "driver_before",
    "driver_after",
    "error",
    "note",
    "was_active",
    "finished_at",
)

# The order of a downtime's phases (phases_s); "start" is measured as the rest of the downtime.
PHASES = ("stop", "switch", "driver", "probe", "start")

COLUMNS = (
    ("host", "node"),
    ("status", "status"),
    ("batch", "batch"),
    ("old_stack", "from"),
    ("new_stack", "to"),
    ("downtime", "downtime (s)"),
    ("phases", "stop / switch / driver / probe / start (s)"),
    ("steps", "step before -> after"),
    ("probe", "probe (GEMM TFLOP/s)"),
    ("service_state", "service"),
    ("driver", "driver"),
    ("error", "error"),
)

REPORT_NAMES = ("rollout-report.md", "rollout-report.json", "rollout-report.html")


class RecordError(ValueError):
    """A record or rollout document that does not have the expected shape."""


# --- records -------------------------------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _int(value: Any) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def normalize(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record with every field, numbers as numbers, empty strings as None. Raises RecordError on a record
    without a host or with an unknown status."""
    host = _text(record.get("host"))
    if not host:
        raise RecordError(f"record without a host: {dict(record)!r}")
    status = _text(record.get("status")) or UNTOUCHED
    if status not in STATUSES:
        raise RecordError(f"{host}: status {status!r} is not one of {', '.join(STATUSES)}")
    out: dict[str, Any] = {name: None for name in RECORD_FIELDS}
    out.update(
        host=host,
        status=status,
        old_stack=_text(record.get("old_stack")),
        new_stack=_text(record.get("new_stack")),
        batch=_int(record.get("batch")),
        downtime_s=None if _number(record.get("downtime_s")) is None else round(_number(record.get("downtime_s")), 1),
        phases_s=_phases(record.get("phases_s")),
        step_before=_int(record.get("step_before")),
        step_after=_int(record.get("step_after")),
        probe_status=_text(record.get("probe_status")),
        gemm_tflops=_number(record.get("gemm_tflops")),
        service_state=_text(record.get("service_state")),
        driver_before=_text(record.get("driver_before")),
        driver_after=_text(record.get("driver_after")),
        error=_text(record.get("error")),
        note=_text(record.get("note")),
        was_active=_bool(record.get("was_active")),
        finished_at=_text(record.get("finished_at")),
    )
    return out


def _bool(value: Any) -> bool | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("true", "1", "yes")


def _phases(value: Any) -> dict[str, float] | None:
    if not isinstance(value, Mapping):
        return None
    out = {name: round(_number(value.get(name)), 1) for name in PHASES if _number(value.get(name)) is not None}
    return out or None


def merge(previous: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """The record to keep when `new` replaces `previous` for the same node.

    A re-run after a halt finds the nodes an earlier run moved already on the new stack and records them as
    skipped; their earlier record (downtime, steps, probe) is what happened to them in this rollout, so it is kept,
    noted as done by an earlier run."""
    new = normalize(new)
    if previous is None:
        return new
    previous = normalize(previous)
    if new["status"] == SKIPPED and previous["status"] == DONE and previous["new_stack"] == new["new_stack"]:
        return {**previous, "note": "done by an earlier run of this rollout"}
    return new


def lost(previous: Mapping[str, Any] | None, host: str, reason: str) -> dict[str, Any]:
    """The record of a node that Ansible lost during the run: its earlier fields (stacks, batch, step) kept, its
    status unreachable, the reason in its error. Its real state is unknown: the next run reconciles it from its
    flip journal."""
    base = normalize(previous) if previous else normalize({"host": host})
    return {**base, "status": UNREACHABLE, "error": f"unreachable (state unknown): {reason}"}


# --- the probe gate --------------------------------------------------------------------------------------------------


def gemm_tflops(report: Mapping[str, Any] | None) -> float | None:
    """The slowest GPU's bf16 GEMM TFLOP/s in a probe report, or None."""
    values = []
    for check in (report or {}).get("checks") or []:
        if str(check.get("name", "")).startswith("gemm_bf16_tflops[") and _number(check.get("value")) is not None:
            values.append(_number(check.get("value")))
    return min(values) if values else None


def probe_verdict(
    report: Mapping[str, Any] | None, gpu_required: bool, fail_on: Sequence[str] = ("CRIT",)
) -> dict[str, Any]:
    """Whether a node passes the rollout's probe gate: {"ok", "status", "reason", "gemm_tflops"}.

    A node fails when its report's status is in fail_on and a GPU is required (gpu_validate's own gate), and on
    any node when the report names checks in its `stack_broken` field (h100fleet.probes.result.Report): the new
    stack cannot run the probes (nvidia-ml-py missing, torch not importable). On a node without a GPU the probe's
    status is CRIT anyway ("no NVIDIA GPU visible"), and only that field tells a broken stack from a GPU-less
    node. A report without the field comes from a probe that cannot say: it fails the gate."""
    if not isinstance(report, Mapping) or "checks" not in report:
        return {"ok": False, "status": None, "reason": "no probe report", "gemm_tflops": None}
    if not isinstance(report.get("stack_broken"), list):
        return {
            "ok": False,
            "status": _text(report.get("status")),
            "reason": "the probe report has no stack_broken field (a probe older than this rollout)",
            "gemm_tflops": gemm_tflops(report),
        }
    status = str(report.get("status") or "UNKNOWN")
    bad = [c for c in report["checks"] if c.get("status") != "OK"]
    named = set(report["stack_broken"])
    broken = [c for c in report["checks"] if c.get("name") in named] or [
        {"name": name} for name in report["stack_broken"]
    ]
    reason = None
    if broken:
        first = broken[0]
        reason = f"the stack cannot run the probes: {first.get('name')}: {first.get('detail') or first.get('value')}"
    elif gpu_required and status in fail_on:
        first = bad[0] if bad else {}
        reason = f"probe {status}: {first.get('name')}: {first.get('detail') or first.get('value')}"
    return {"ok": reason is None, "status": status, "reason": reason, "gemm_tflops": gemm_tflops(report)}


# --- the flip journal -----------------------------------------------------------------------------------------------
#
# A node keeps one journal (JSON, on the node) of its last flip: opened before its trainer is stopped, closed only
# once the trainer is confirmed training on the stack it ends on. A journal that is not closed means the flip is
# unfinished, whatever the node's links say. Stacks in it are the node's h100fleet_stack fact entries
# ({"id", "lock_hash", "path"}). Fields: schema, kind (rollout / rollback), state (open / recovered / closed), from
# and to (the stacks the flip moves between), restore ({"current", "previous"}: the links that put the node back
# where it was safe: the stack it came from for a rollout, the target of a rollback), was_active and step (the
# trainer before the flip: whether it ran, its checkpointed step), opened_at and deadline (epoch seconds on the
# node's clock: the node-side guard, h100fleet.node.rollout_guard, restores `restore` and restarts the trainer
# once the deadline passes on an open journal, and marks it recovered), recovered_at, closed_at, outcome.

JOURNAL_SCHEMA = 1
OPEN, RECOVERED, CLOSED = "open", "recovered", "closed"


def journal_state(journal: Mapping[str, Any] | None) -> str:
    """none, open, recovered or closed."""
    if not isinstance(journal, Mapping) or not journal:
        return "none"
    state = _text(journal.get("state"))
    if state not in (OPEN, RECOVERED, CLOSED):
        raise RecordError(f"flip journal with state {state!r}: expected open, recovered or closed")
    return state


def journal_unfinished(journal: Mapping[str, Any] | None) -> bool:
    return journal_state(journal) in (OPEN, RECOVERED)


def _stack(entry: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not isinstance(entry, Mapping) or not entry.get("id"):
        return None
    return {"id": entry.get("id"), "lock_hash": entry.get("lock_hash"), "path": entry.get("path")}


def journal_open(
    existing: Mapping[str, Any] | None,
    *,
    kind: str,
    active: Mapping[str, Any],
    previous: Mapping[str, Any] | None,
    to: Mapping[str, Any],
    was_active: Any,
    now: Any,
    timeout: Any,
) -> dict[str, Any]:
    """The journal to write before a flip's stop. An open journal of an earlier, interrupted flip keeps what it
    knew before that flip began (the stack to restore, whether the trainer ran, its step): what the node shows now
    (a trainer stopped by the interrupted flip, links already moved) is not what it was. A recovered one (the
    node-side guard put the node back and restarted its trainer) starts afresh from what the node runs now. A
    rollback's restore target is the stack it goes to."""
    if kind not in ("rollout", "rollback"):
        raise RecordError(f"journal kind {kind!r}: expected rollout or rollback")
    now_s, timeout_s = float(now), float(timeout)
    target = _stack(to)
    if target is None:
        raise RecordError(f"journal target {to!r} has no stack id")
    if journal_state(existing) == OPEN:
        kept = dict(existing)  # type: ignore[arg-type]
        restore = dict(kept.get("restore") or {})
        if kind == "rollback":
            restore = {"current": target, "previous": _stack(active)}
        return {
            **kept,
            "kind": kind,
            "state": OPEN,
            "to": target,
            "restore": restore,
            "deadline": round(now_s + timeout_s, 3),
            "resumed": int(kept.get("resumed") or 0) + 1,
        }
    here = _stack(active)
    if here is None:
        raise RecordError("the node runs no stack: nothing to journal a flip from")
    restore = (
        {"current": here, "previous": _stack(previous)} if kind == "rollout" else {"current": target, "previous": here}
    )
    return {
        "schema": JOURNAL_SCHEMA,
        "kind": kind,
        "state": OPEN,
        "from": here,
        "to": target,
        "restore": restore,
        "was_active": bool(_bool(was_active)),
        "step": None,
        "opened_at": round(now_s, 3),
        "deadline": round(now_s + timeout_s, 3),
        "resumed": 0,
    }


def journal_step(journal: Mapping[str, Any], step: Any) -> dict[str, Any]:
    """The journal with the checkpointed step read after the stop; a resumed journal keeps the step its first flip
    saw (the interrupted flip's trainer checkpointed then)."""
    if journal.get("step") is not None:
        return dict(journal)
    return {**journal, "step": _int(step)}


def journal_close(journal: Mapping[str, Any], outcome: str, now: Any) -> dict[str, Any]:
    """The journal closed: the trainer is confirmed training (or was idle) on the stack the node ends on."""
    return {**journal, "state": CLOSED, "outcome": outcome, "closed_at": round(float(now), 3)}


def same_stack(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """Whether two stack entries name the same venv (its path where both have one, else id and lock hash)."""
    a, b = _stack(a), _stack(b)
    if a is None or b is None:
        return False
    if a.get("path") and b.get("path"):
        return a["path"] == b["path"]
    return (a["id"], a.get("lock_hash")) == (b["id"], b.get("lock_hash"))


def rollback_target(
    journal: Mapping[str, Any] | None,
    rollback_to: str | None,
    active: Mapping[str, Any] | None,
    previous: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """What playbooks/rollback.yml does on a node: {"action", "target", "reason"}.

    The target is the stack named by rollback_to (the active or previous stack of that id), else the journal's
    restore stack (the stack an unfinished or the last rollout came from; a rollback's own target). action: none
    (the node runs the target and its journal is closed: a second rollback changes nothing), finish (it runs the
    target but its journal is open: confirm the trainer and close it), switch, or refuse (with the reason)."""
    state = journal_state(journal)
    wanted = _text(rollback_to)
    if wanted:
        candidates = [s for s in (_stack(active), _stack(previous)) if s and s["id"] == wanted]
        if state != "none":
            restore = _stack((journal.get("restore") or {}).get("current"))  # type: ignore[union-attr]
            if restore and restore["id"] == wanted:
                candidates.insert(0, restore)
        if not candidates:
            return {
                "action": "refuse",
                "target": None,
                "reason": f"rollout_rollback_to {wanted!r} is neither the node's current stack "
                f"({(active or {}).get('id') or 'none'}) nor its previous one ({(previous or {}).get('id') or 'none'})",
            }
        target = candidates[0]
    elif state == "none":
        return {
            "action": "refuse",
            "target": None,
            "reason": "the node has no flip journal (no rollout moved it): name the stack with "
            "-e rollout_rollback_to=<id>",
        }
    else:
        target = _stack((journal.get("restore") or {}).get("current"))  # type: ignore[union-attr]
        if target is None:
            return {"action": "refuse", "target": None, "reason": "the node's flip journal names no stack to restore"}
    if same_stack(active, target):
        action = "finish" if state in (OPEN, RECOVERED) else "none"
        return {"action": action, "target": target, "reason": f"runs {target['id']} already"}
    return {"action": "switch", "target": target, "reason": f"{(active or {}).get('id')} -> {target['id']}"}


# --- the training step -----------------------------------------------------------------------------------------------


def training_progress(status: Mapping[str, Any] | None, step_before: int | None) -> dict[str, Any]:
    """Judge the trainer's status document after a restart against the checkpointed step.

    {"continued", "reset", "failed", "settled", "step", "state"}: continued when the step advanced past
    step_before (or the run finished at or past it); reset when the trainer reports a step below step_before (it
    did not resume from the checkpoint); failed when it reports state "failed"; settled when any of the three
    holds (nothing more to wait for)."""
    status = status if isinstance(status, Mapping) else {}
    step = _int(status.get("step"))
    state = _text(status.get("state"))
    before = step_before if step_before is not None else 0
    reset = step is not None and step < before
    continued = step is not None and not reset and (step > before or (state == "finished" and step >= before))
    failed = state == "failed" and not continued
    settled = continued or reset or failed
    return {"continued": continued, "reset": reset, "failed": failed, "settled": settled, "step": step, "state": state}


def phases_s(marks: Mapping[str, Any] | None, downtime: Any) -> dict[str, float] | None:
    """Where a node's downtime went, from the control node's clock marks of one flip: t0 (before the stop),
    stopped, switched, driver (only with a driver bump), probed; each phase is the time since the previous mark.
    "start" (starting the service until the trainer's first step past the checkpoint) is the downtime, measured on
    the node's clock, less the phases before it, so the phases add up to the downtime. Marks not reached (a
    rollback) end the list; None without t0."""
    marks = marks if isinstance(marks, Mapping) else {}
    previous = _number(marks.get("t0"))
    if previous is None:
        return None
    out: dict[str, float] = {}
    for name, mark in (("stop", "stopped"), ("switch", "switched"), ("driver", "driver"), ("probe", "probed")):
        when = _number(marks.get(mark))
        if when is None:
            if name == "driver":
                continue
            break
        out[name] = round(max(0.0, when - previous), 1)
        previous = when
    total = _number(downtime)
    if total is not None and "probe" in out:
        out["start"] = round(max(0.0, total - sum(out.values())), 1)
    return out or None


def serial_batches(n: int, serial: Sequence[Any]) -> list[int]:
    """The batch sizes `serial: [...]` makes of n hosts, as ansible-playbook makes them: each value a count or a
    percentage of all n hosts (at least 1), the last value repeated until every host is in a batch."""
    values = list(serial) or [n]
    sizes: list[int] = []
    left, item = n, 0
    while left > 0:
        value = str(values[item]).strip()
        size = max(1, int(int(value[:-1]) / 100.0 * n)) if value.endswith("%") else int(value)
        size = left if size <= 0 else min(size, left)
        sizes.append(size)
        left -= size
        item = min(item + 1, len(values) - 1)
    return sizes


def batch_number(host: str, hosts: Sequence[str], serial: Sequence[Any]) -> int | None:
    """1-based number of the batch that moves `host` (hosts: the play's hosts in order), None when not among them."""
    if host not in hosts:
        return None
    index = list(hosts).index(host)
    end = 0
    for number, size in enumerate(serial_batches(len(hosts), serial), start=1):
        end += size
        if index < end:
            return number
    return None  # pragma: no cover - serial_batches covers every host


def job_batch_problem(host: str, pending: Sequence[str], serial: Sequence[Any], jobs: Mapping[str, str]) -> str | None:
    """Why `host`'s job cannot move as the batches stand, or None. jobs: each host of a job over several nodes ->
    its job's name (training_service_job_group); pending: the hosts still to move, in the flip play's order.

    A job over several nodes must move in one batch: stopping one of its nodes stops the whole job after one
    checkpoint, and nodes on different stacks refuse to train it together, so batch-mates restart it on the new
    stack and a node left behind would hold it stopped until a later batch."""
    job = jobs.get(host)
    if not job or host not in pending:
        return None
    members = [h for h in pending if jobs.get(h) == job]
    numbers = {h: batch_number(h, pending, serial) for h in members}
    if len(set(numbers.values())) == 1:
        return None
    where = ", ".join(f"{h} in batch {n}" for h, n in numbers.items())
    sizes = serial_batches(len(pending), serial)
    return (
        f"the nodes of job {job} must move in one batch (a flip stops the whole job; its nodes train it only on one "
        f"stack), but {where} (batch sizes {sizes} from rollout_canary and rollout_batch over {len(pending)} "
        f"pending nodes in inventory order): choose a canary and batch size that keep them together (e.g. "
        f"-e rollout_canary={len(members)} when they come first) or list the job's nodes next to each other"
    )


def downtime_s(stop_epoch: Any, status: Mapping[str, Any] | None) -> float | None:
    """Seconds from the service stop (epoch seconds on the node's clock) until the restarted trainer finished its
    first step (the status's `first_step_at`, ISO 8601 with a UTC offset, the same clock), or, from a trainer that
    does not report that, until it wrote the status that showed the step advancing (`updated_at`); None when
    either end is missing."""
    start = _number(stop_epoch)
    status = status if isinstance(status, Mapping) else {}
    stamp = _text(status.get("first_step_at")) or _text(status.get("updated_at"))
    if start is None or stamp is None:
        return None
    try:
        when = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z")
    except ValueError:
        try:
            when = datetime.fromisoformat(stamp)
        except ValueError:
            return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return round(max(0.0, when.timestamp() - start), 1)


# --- the report ------------------------------------------------------------------------------------------------------


def summary(records: Sequence[Mapping[str, Any]], rollout: Mapping[str, Any] | None = None) -> dict[str, Any]:
    rollout = rollout or {}
    counts = {status: 0 for status in STATUSES}
    for r in records:
        counts[r["status"]] += 1
    downtimes = [r["downtime_s"] for r in records if r["status"] == DONE and r["downtime_s"] is not None]
    target = _number(rollout.get("downtime_target_s")) or DOWNTIME_TARGET_S
    halted = any(counts[status] for status in HALTING)
    remaining = [r["host"] for r in records if r["status"] not in ON_NEW]
    # A done node whose trainer ran before the flip and is not running now needs attention: not complete.
    not_training = [
        r["host"]
        for r in records
        if r["status"] == DONE and r.get("was_active") and r.get("service_state") not in (None, "active")
    ]
    if halted:
        state = "halted"
    elif counts[REVERTED] and not any(r["status"] in ON_NEW for r in records):
        state = "rolled back"
    elif remaining or not_training:
        state = "in progress"
    else:
        state = "complete"
    return {
        "state": state,
        "nodes": len(records),
        "counts": counts,
        "on_new_stack": len(records) - len(remaining),
        "remaining_on_old": remaining,
        "failed": [r["host"] for r in records if r["status"] in (ROLLED_BACK, ROLLBACK_FAILED)],
        "unreachable": [r["host"] for r in records if r["status"] == UNREACHABLE],
        "not_training": not_training,
        "attention": {
            r["host"]: " ".join((r.get("error") or r["status"]).split())[:200]
            for r in records
            if r["status"] in HALTING or r["host"] in not_training or (r["status"] == UNTOUCHED and r.get("error"))
        },
        "downtime_s": {
            "count": len(downtimes),
            "max": max(downtimes) if downtimes else None,
            "median": round(statistics.median(downtimes), 1) if downtimes else None,
            "mean": round(statistics.fmean(downtimes), 1) if downtimes else None,
            "target": target,
            "over_target": [r["host"] for r in records if r["status"] == DONE and (r["downtime_s"] or 0) > target],
            "phases_median": _phases_median([r for r in records if r["status"] == DONE]),
        },
    }


def _phases_median(records: Sequence[Mapping[str, Any]]) -> dict[str, float] | None:
    out = {}
    for name in PHASES:
        values = [r["phases_s"][name] for r in records if r.get("phases_s") and name in r["phases_s"]]
        if values:
            out[name] = round(statistics.median(values), 1)
    return out or None


def document(rollout: Mapping[str, Any] | None, records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The report as one JSON-serialisable document: the run, its summary and the records (host order)."""
    rows = sorted((normalize(r) for r in records), key=lambda r: _host_key(r["host"]))
    rollout = dict(rollout or {})
    return {"schema": SCHEMA, "rollout": rollout, "summary": summary(rows, rollout), "nodes": rows}


def _host_key(host: str) -> tuple:
    # node-2 before node-10
    parts: list[Any] = []
    digits = ""
    text = ""
    for ch in host:
        if ch.isdigit():
            if text:
                parts.append((1, text))
                text = ""
            digits += ch
        else:
            if digits:
                parts.append((0, int(digits)))
                digits = ""
            text += ch
    if digits:
        parts.append((0, int(digits)))
    if text:
        parts.append((1, text))
    return tuple(parts)


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return MISSING
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _cells(r: Mapping[str, Any]) -> dict[str, str]:
    steps = MISSING
    if r["step_before"] is not None or r["step_after"] is not None:
        steps = f"{_fmt(r['step_before'])} -> {_fmt(r['step_after'])}"
    probe = r["probe_status"] or MISSING
    if r["gemm_tflops"] is not None:
        probe += f" ({r['gemm_tflops']:.0f})"
    error = r["error"] or r.get("note") or ""
    phases = r.get("phases_s") or {}
    driver = r.get("driver_before") or MISSING
    if r.get("driver_after") and r.get("driver_after") != r.get("driver_before"):
        driver = f"{driver} -> {r['driver_after']}"
    return {
        "host": r["host"],
        "status": r["status"],
        "batch": _fmt(r.get("batch")),
        "phases": " / ".join(_fmt(phases.get(name)) for name in PHASES) if phases else MISSING,
        "driver": driver,
        "old_stack": r["old_stack"] or MISSING,
        "new_stack": r["new_stack"] or MISSING,
        "downtime": _fmt(r["downtime_s"]),
        "steps": steps,
        "probe": probe,
        "service_state": r["service_state"] or MISSING,
        "error": " ".join(error.split())[:300] or MISSING,
    }


def _headline(doc: Mapping[str, Any]) -> list[str]:
    s = doc["summary"]
    ro = doc["rollout"]
    target = ro.get("stack") or MISSING
    lines = [
        f"Rollout to `{target}`"
        + (f" (driver {ro['driver_version']})" if ro.get("driver_version") else "")
        + f": **{s['state']}**. {s['on_new_stack']} of {s['nodes']} nodes on the new stack.",
    ]
    counts = ", ".join(f"{n} {status}" for status, n in s["counts"].items() if n)
    if counts:
        lines.append(f"Nodes: {counts}.")
    if s["failed"]:
        lines.append(f"Rolled back, and the rollout stopped there: {', '.join(s['failed'])} (see error).")
    if s["unreachable"]:
        lines.append(
            f"Unreachable (state unknown): {', '.join(s['unreachable'])}; the next run reconciles them from their "
            "flip journals."
        )
    if s["not_training"]:
        lines.append(f"On the new stack but not training: {', '.join(s['not_training'])}.")
    if s["remaining_on_old"]:
        lines.append(f"Not on the new stack: {', '.join(s['remaining_on_old'])}.")
    for host, why in s["attention"].items():
        lines.append(f"Needs attention: {host}: {why}")
    d = s["downtime_s"]
    if d["count"]:
        verdict = "within" if not d["over_target"] else f"over for {', '.join(d['over_target'])}:"
        lines.append(
            f"Training downtime per node (stop until the step advanced again): median {_fmt(d['median'])} s, "
            f"max {_fmt(d['max'])} s over {d['count']} nodes; {verdict} the {_fmt(d['target'], 0)} s target."
        )
        if d.get("phases_median"):
            parts = ", ".join(f"{name} {_fmt(value)} s" for name, value in d["phases_median"].items())
            lines.append(f"Median phases of the downtime: {parts}.")
    return lines


def markdown(doc: Mapping[str, Any]) -> str:
    ro = doc["rollout"]
    lines = ["# Fleet rollout report", ""]
    lines += _headline(doc)
    lines.append("")
    settings = [
        f"{name} {ro[key]}"
        for key, name in (
            ("canary", "canary"),
            ("batch", "batch"),
            ("started_at", "started"),
            ("updated_at", "updated"),
        )
        if ro.get(key) not in (None, "")
    ]
    if settings:
        lines += ["; ".join(settings) + ".", ""]
    lines += markdown_table(COLUMNS, (_cells(r) for r in doc["nodes"]))
    return "\n".join(lines) + "\n"


STATUS_COLOURS = {
    DONE: "#2e7d32",
    SKIPPED: "#78909c",
    ROLLED_BACK: "#c62828",
    ROLLBACK_FAILED: "#6a1b9a",
    UNREACHABLE: "#ef6c00",
    REVERTED: "#1565c0",
    UNTOUCHED: "#b0bec5",
}


def svg_chart(doc: Mapping[str, Any], width: int = 760, bar: int = 16, gap: int = 4) -> str:
    """An inline SVG bar chart of per-node training downtime, one bar per node, coloured by status, with the
    target as a dashed line. Nodes without a downtime (skipped, untouched) get a labelled empty row."""
    nodes = doc["nodes"]
    target = doc["summary"]["downtime_s"]["target"]
    values = [n["downtime_s"] for n in nodes if n["downtime_s"] is not None]
    scale_max = max([target, *values]) * 1.1 if values else target * 1.1
    label_w, right = 170, 60
    plot_w = width - label_w - right
    height = 30 + len(nodes) * (bar + gap) + 20
    e = html.escape
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="training downtime per node">',
        f'<text x="{label_w}" y="16" font-size="12">training downtime per node (s); dashed: {target:.0f} s target'
        "</text>",
    ]
    for i, n in enumerate(nodes):
        y = 26 + i * (bar + gap)
        out.append(f'<text x="{label_w - 6}" y="{y + bar - 4}" font-size="11" text-anchor="end">{e(n["host"])}</text>')
        colour = STATUS_COLOURS[n["status"]]
        if n["downtime_s"] is not None:
            w = max(1.0, plot_w * n["downtime_s"] / scale_max)
            out.append(
                f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar}" fill="{colour}">'
                f"<title>{e(n['host'])}: {n['downtime_s']:.1f} s ({e(n['status'])})</title></rect>"
            )
            out.append(f'<text x="{label_w + w + 4:.1f}" y="{y + bar - 4}" font-size="11">{n["downtime_s"]:.1f}</text>')
        else:
            out.append(
                f'<text x="{label_w + 4}" y="{y + bar - 4}" font-size="11" fill="{colour}">{e(n["status"])}</text>'
            )
    tx = label_w + plot_w * target / scale_max
    bottom = 26 + len(nodes) * (bar + gap)
    out.append(f'<line x1="{tx:.1f}" y1="22" x2="{tx:.1f}" y2="{bottom}" stroke="#333" stroke-dasharray="4 3"/>')
    out.append("</svg>")
    return "\n".join(out)


def html_page(doc: Mapping[str, Any]) -> str:
    """A self-contained page: summary, the downtime chart (inline SVG) and the node table; no external assets."""
    e = html.escape
    head = "".join(f"<p>{e(line).replace('**', '')}</p>" for line in _headline(doc))
    header = "".join(f"<th>{e(title)}</th>" for _, title in COLUMNS)
    body = []
    for n in doc["nodes"]:
        cells = _cells(n)
        colour = STATUS_COLOURS[n["status"]]
        tds = "".join(
            f'<td style="color:{colour};font-weight:bold">{e(cells[k])}</td>'
            if k == "status"
            else f"<td>{e(cells[k])}</td>"
            for k, _ in COLUMNS
        )
        body.append(f"<tr>{tds}</tr>")
    legend = " ".join(
        f'<span style="color:{c};font-weight:bold">&#9632; {e(s)}</span>' for s, c in STATUS_COLOURS.items()
    )
    data = e(json.dumps(doc["summary"], sort_keys=True))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Fleet rollout report</title>'
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}th{background:#eee}</style></head>\n<body>"
        f"<h1>Fleet rollout report</h1>\n{head}\n<p>{legend}</p>\n{svg_chart(doc)}\n"
        f"<table><thead><tr>{header}</tr></thead><tbody>\n" + "\n".join(body) + "\n</tbody></table>\n"
        f'<script type="application/json" id="summary">{data}</script>\n</body></html>\n'
    )


# --- the report directory --------------------------------------------------------------------------------------------


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "a", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _record_path(directory: Path, host: str) -> Path:
    if "/" in host or host.startswith("."):
        raise RecordError(f"host name {host!r} cannot name a record file")
    return directory / "nodes" / f"{host}.json"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def load(directory: Path) -> dict[str, Any]:
    """The report document of a directory: the run's hosts from rollout.json, each with its record (a host
    without one is untouched)."""
    rollout = _read_json(directory / "rollout.json") or {}
    hosts = list(rollout.get("hosts") or [])
    records = {}
    for path in sorted((directory / "nodes").glob("*.json")):
        data = _read_json(path)
        if isinstance(data, Mapping) and data.get("host"):
            records[data["host"]] = data
    if not hosts:
        hosts = list(records)
    rows = [records.get(h) or {"host": h, "status": UNTOUCHED, "new_stack": rollout.get("stack")} for h in hosts]
    return document({k: v for k, v in rollout.items() if k != "hosts"}, rows)


def render(directory: Path) -> dict[str, Any]:
    """Write rollout-report.md, .json and .html from the directory's records; return the document."""
    doc = load(directory)
    md_name, json_name, html_name = REPORT_NAMES
    _write_atomic(directory / json_name, json.dumps(doc, indent=2, sort_keys=False) + "\n")
    _write_atomic(directory / md_name, markdown(doc))
    _write_atomic(directory / html_name, html_page(doc))
    return doc


def init(directory: Path, rollout: Mapping[str, Any] | None, records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Start (or resume) a rollout: write rollout.json (unless rollout is None: keep it) and each node's first
    record (untouched, or skipped when it already runs the new stack; an earlier run's done record is kept, see
    merge), then render."""
    with _locked(directory):
        if rollout is not None:
            _write_atomic(directory / "rollout.json", json.dumps(dict(rollout), indent=2) + "\n")
        for record in records:
            path = _record_path(directory, normalize(record)["host"])
            kept = merge(_read_json(path), record)
            _write_atomic(path, json.dumps(kept, indent=2) + "\n")
        return render(directory)


def record(directory: Path, rec: Mapping[str, Any], *, update: bool = False) -> dict[str, Any]:
    """Write one node's record and render the report again (serialised by a lock on the directory, so the last
    render has seen every record written before it). A skipped record keeps an earlier done one (merge); with
    update, the given fields replace those of the node's record and the others are kept."""
    host = normalize(rec)["host"]
    with _locked(directory):
        path = _record_path(directory, host)
        earlier = _read_json(path)
        if update and isinstance(earlier, Mapping):
            new = normalize({**normalize(earlier), **rec})
        else:
            new = merge(earlier if isinstance(earlier, Mapping) else None, rec)
        _write_atomic(path, json.dumps(new, indent=2) + "\n")
        return render(directory)


def mark_lost(directory: Path, hosts: Iterable[str], reason: str) -> dict[str, Any]:
    """Mark the nodes Ansible lost during the run unreachable (state unknown), keeping their records' other fields,
    and render the report."""
    with _locked(directory):
        for host in hosts:
            path = _record_path(directory, host)
            earlier = _read_json(path)
            rec = lost(earlier if isinstance(earlier, Mapping) else None, host, reason)
            _write_atomic(path, json.dumps(rec, indent=2) + "\n")
        return render(directory)


def _stdin_json() -> Any:
    try:
        return json.load(sys.stdin)
    except ValueError as exc:
        raise RecordError(f"standard input is not JSON: {exc}") from exc


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m h100fleet.fleet.rollout", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name, text in (
        ("init", 'start a rollout: {"rollout": {...}, "records": [...]} on standard input'),
        ("record", "write one node's record (JSON on standard input) and render the report"),
        ("render", "render the report from the records"),
        ("lost", "mark nodes unreachable (state unknown): --reason TEXT HOST..."),
    ):
        sp = sub.add_parser(name, help=text)
        sp.add_argument("--dir", type=Path, required=True, help="the rollout's report directory")
        if name == "record":
            sp.add_argument("--update", action="store_true", help="replace only the given fields of the record")
        if name == "lost":
            sp.add_argument("--reason", required=True, help="why the nodes are counted as lost")
            sp.add_argument("hosts", nargs="+", help="the nodes Ansible lost")
    args = p.parse_args(argv)
    try:
        if args.command == "init":
            data = _stdin_json()
            if not isinstance(data, Mapping) or not isinstance(data.get("rollout"), (Mapping, type(None))):
                raise RecordError('init expects {"rollout": {...} or null, "records": [...]}')
            doc = init(args.dir, data["rollout"], data.get("records") or [])
        elif args.command == "record":
            data = _stdin_json()
            if not isinstance(data, Mapping):
                raise RecordError("record expects one JSON object")
            doc = record(args.dir, data, update=args.update)
        elif args.command == "lost":
            doc = mark_lost(args.dir, args.hosts, args.reason)
        else:
            with _locked(args.dir):
                doc = render(args.dir)
    except RecordError as exc:
        print(f"rollout report: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(doc["summary"], sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

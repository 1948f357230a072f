"""The fleet rollout report (h100fleet.fleet.rollout): records, the probe gate, the step check, the report."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest

from h100fleet.fleet import rollout
from h100fleet.probes import nvml
from h100fleet.probes import run as probe_run
from h100fleet.probes.checks import Expectations

A = "torch2.3-unsloth2024.8-py310"
B = "torch2.3-unsloth2024.8-py310-b"


def rec(host, status, **kw):
    return {"host": host, "status": status, "old_stack": A, "new_stack": B, **kw}


def done(host, downtime, step_before=100, step_after=110, **kw):
    return rec(
        host,
        "done",
        downtime_s=downtime,
        step_before=step_before,
        step_after=step_after,
        probe_status="OK",
        gemm_tflops=790.2,
        **{"service_state": "active", **kw},
    )


# --- records -------------------------------------------------------------------------------------------------------


def test_normalize_fills_every_field_and_converts_numbers():
    r = rollout.normalize({"host": "n1", "status": "done", "downtime_s": "41.26", "step_before": "100", "error": ""})
    assert set(r) == set(rollout.RECORD_FIELDS)
    assert r["downtime_s"] == 41.3
    assert r["step_before"] == 100
    assert r["error"] is None
    assert r["probe_status"] is None


def test_normalize_refuses_unknown_status_and_missing_host():
    with pytest.raises(rollout.RecordError, match="status 'ok' is not one of"):
        rollout.normalize({"host": "n1", "status": "ok"})
    with pytest.raises(rollout.RecordError, match="without a host"):
        rollout.normalize({"status": "done"})


def test_merge_keeps_an_earlier_done_record_when_a_rerun_skips_the_node():
    earlier = done("n1", 40.0)
    kept = rollout.merge(earlier, rec("n1", "skipped"))
    assert kept["status"] == "done"
    assert kept["downtime_s"] == 40.0
    assert "earlier run" in kept["note"]


def test_merge_replaces_records_of_another_target_or_status():
    assert rollout.merge(done("n1", 40.0, new_stack="other"), rec("n1", "skipped"))["status"] == "skipped"
    assert rollout.merge(rec("n1", "rolled-back"), rec("n1", "untouched"))["status"] == "untouched"
    assert rollout.merge(None, rec("n1", "skipped"))["status"] == "skipped"


# --- the probe gate --------------------------------------------------------------------------------------------------


def report_from(snapshot, **kw):
    """A real probe report (h100fleet.probes.run.probe) on a recorded snapshot, without torch."""
    report = probe_run.probe(Expectations(), probe_run.Thresholds(), compute=False, unsloth=False, snapshot=snapshot)
    return json.loads(report.to_json())


def test_gpu_less_node_with_a_working_stack_passes_when_no_gpu_is_required():
    report = report_from({"error": "libnvidia-ml.so not found: no NVIDIA driver installed"})
    assert report["status"] == "CRIT"
    verdict = rollout.probe_verdict(report, gpu_required=False)
    assert verdict == {"ok": True, "status": "CRIT", "reason": None, "gemm_tflops": None}


def test_gpu_node_fails_on_crit_when_a_gpu_is_required():
    report = report_from({"error": "NVIDIA driver not loaded (NVML: Driver Not Loaded)"})
    verdict = rollout.probe_verdict(report, gpu_required=True)
    assert not verdict["ok"]
    assert verdict["reason"].startswith("probe CRIT: nvidia_gpu_visible")


def test_stack_without_nvidia_ml_py_fails_even_without_a_gpu(monkeypatch):
    # What the probe reports when it runs in a stack without nvidia-ml-py: the real nvml.snapshot, pynvml hidden.
    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert "not importable" in nvml.snapshot()["error"]
    report = report_from(None)  # the probe reads NVML on this node, as on a real one
    assert report["stack_broken"] == ["nvidia_gpu_visible"]
    verdict = rollout.probe_verdict(report, gpu_required=False)
    assert not verdict["ok"]
    assert "the stack cannot run the probes" in verdict["reason"]
    assert "pynvml" in verdict["reason"]


def test_the_gate_reads_the_reports_stack_broken_field_not_a_message():
    # a GPU-less node on a good stack whose message happens to read like a broken stack passes: the field decides
    report = report_from({"error": "pynvml (nvidia-ml-py) not importable, says the test"})
    assert report["stack_broken"] == []
    assert rollout.probe_verdict(report, gpu_required=False)["ok"]
    report["stack_broken"] = ["nvidia_gpu_visible"]
    verdict = rollout.probe_verdict(report, gpu_required=False)
    assert not verdict["ok"] and verdict["reason"].startswith("the stack cannot run the probes: nvidia_gpu_visible")
    # a report from a probe without the field cannot tell: it fails
    del report["stack_broken"]
    assert "no stack_broken field" in rollout.probe_verdict(report, gpu_required=False)["reason"]


def test_torch_import_failure_fails_the_gate():
    report = {
        "status": "CRIT",
        "stack_broken": ["torch_import"],
        "checks": [
            {"name": "nvidia_gpu_visible", "status": "OK", "value": "8 NVIDIA GPUs visible"},
            {"name": "torch_import", "status": "CRIT", "value": None, "detail": "ImportError: libcudnn.so.8"},
        ],
    }
    verdict = rollout.probe_verdict(report, gpu_required=True)
    assert not verdict["ok"]
    assert "torch_import" in verdict["reason"]


def test_missing_report_fails_and_gemm_is_the_slowest_gpu():
    assert rollout.probe_verdict(None, gpu_required=False)["reason"] == "no probe report"
    report = {
        "status": "OK",
        "stack_broken": [],
        "checks": [
            {"name": "gemm_bf16_tflops[0]", "status": "OK", "value": 790.5},
            {"name": "gemm_bf16_tflops[1]", "status": "OK", "value": 781.0},
            {"name": "copy_bandwidth_gbs[0]", "status": "OK", "value": 2900},
        ],
    }
    verdict = rollout.probe_verdict(report, gpu_required=True)
    assert verdict["ok"]
    assert verdict["gemm_tflops"] == 781.0


# --- the training step -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "continued", "reset"),
    [
        ({"state": "starting", "step": 100}, False, False),  # resumed, not yet advanced
        ({"state": "stopped", "step": 100}, False, False),  # the old process's last word
        ({"state": "training", "step": 110}, True, False),
        ({"state": "finished", "step": 100}, True, False),  # the run ended at the checkpoint
        ({"state": "training", "step": 10}, False, True),  # started over: did not resume
        ({"state": "starting", "step": 0}, False, True),
        ({"state": "failed", "step": 100}, False, False),
        ({}, False, False),
        (None, False, False),
    ],
)
def test_training_progress(status, continued, reset):
    result = rollout.training_progress(status, 100)
    assert (result["continued"], result["reset"]) == (continued, reset)
    assert result["settled"] == (continued or reset or (status or {}).get("state") == "failed")


# --- the report ------------------------------------------------------------------------------------------------------


def halted_doc():
    records = [
        done("node-1", 41.0),
        rec("node-2", "rolled-back", probe_status="CRIT", service_state="active", error="probe | stack broken"),
        rec("node-10", "untouched"),
        rec("node-3", "skipped", old_stack=B),
    ]
    return rollout.document({"stack": B, "canary": 1, "batch": "25%"}, records)


def test_summary_of_a_halted_rollout_names_the_nodes_left_on_the_old_stack():
    doc = halted_doc()
    s = doc["summary"]
    assert s["state"] == "halted"
    assert s["failed"] == ["node-2"]
    assert s["remaining_on_old"] == ["node-2", "node-10"]
    assert s["on_new_stack"] == 2
    assert s["counts"] == {
        "done": 1,
        "skipped": 1,
        "rolled-back": 1,
        "rollback-failed": 0,
        "unreachable": 0,
        "reverted": 0,
        "untouched": 1,
    }
    assert [n["host"] for n in doc["nodes"]] == ["node-1", "node-2", "node-3", "node-10"]


def test_summary_states_and_downtime_figures():
    doc = rollout.document({"stack": B}, [done("a", 30.0), done("b", 50.0), done("c", 95.0)])
    s = doc["summary"]
    assert s["state"] == "complete"
    assert s["downtime_s"] | {"target": 90.0} == {
        "count": 3,
        "max": 95.0,
        "median": 50.0,
        "mean": 58.3,
        "target": 90.0,
        "over_target": ["c"],
        "phases_median": None,
    }
    assert rollout.document({"stack": B}, [done("a", 1.0), rec("b", "untouched")])["summary"]["state"] == "in progress"


def test_markdown_report():
    text = rollout.markdown(halted_doc())
    assert "**halted**. 2 of 4 nodes on the new stack." in text
    assert "Rolled back, and the rollout stopped there: node-2 (see error)." in text
    assert "Not on the new stack: node-2, node-10." in text
    assert "Needs attention: node-2: probe | stack broken" in text
    assert "median 41.0 s, max 41.0 s over 1 nodes; within the 90 s target." in text
    assert f"| node-1 | done | - | {A} | {B} | 41.0 | - | 100 -> 110 | OK (790) | active | - | - |" in text
    # a "|" in an error does not break the table
    assert "probe \\| stack broken" in text
    rows = [line for line in text.splitlines() if line.startswith("| node-")]
    assert all(line.count(" | ") == len(rollout.COLUMNS) - 1 for line in rows)


def test_html_is_self_contained_with_one_bar_per_downtime():
    page = rollout.html_page(halted_doc())
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"(src|href)=", page), "no external assets"
    svg = re.search(r"<svg.*?</svg>", page, re.S).group(0)
    root = ElementTree.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    bars = root.findall(f"{ns}rect")
    assert len(bars) == 1  # only node-1 has a downtime
    assert bars[0].find(f"{ns}title").text == "node-1: 41.0 s (done)"
    assert len(root.findall(f"{ns}line")) == 1  # the target
    summary = re.search(r'<script type="application/json" id="summary">(.*?)</script>', page).group(1)
    assert json.loads(summary.replace("&quot;", '"'))["state"] == "halted"


def test_chart_bars_scale_with_downtime():
    doc = rollout.document({"stack": B}, [done("a", 30.0), done("b", 60.0)])
    widths = [float(w) for w in re.findall(r'<rect [^>]*width="([0-9.]+)"', rollout.svg_chart(doc))]
    assert widths[1] == pytest.approx(2 * widths[0], rel=0.01)


def test_html_escapes_host_names_and_errors():
    doc = rollout.document({"stack": B}, [rec("n<1>", "rolled-back", error="<script>x</script>")])
    page = rollout.html_page(doc)
    assert "<script>x" not in page
    assert "n&lt;1&gt;" in page


# --- the directory and the command line ------------------------------------------------------------------------------


def test_init_record_render_and_resume(tmp_path):
    d = tmp_path / "ro"
    hosts = ["n1", "n2", "n3"]
    rollout.init(d, {"stack": B, "hosts": hosts}, [rec(h, "untouched") for h in hosts])
    doc = json.loads((d / "rollout-report.json").read_text())
    assert doc["summary"]["remaining_on_old"] == hosts
    rollout.record(d, done("n1", 35.0))
    rollout.record(d, rec("n2", "rolled-back", error="probe failed"))
    doc = json.loads((d / "rollout-report.json").read_text())
    assert doc["summary"]["state"] == "halted"
    assert doc["summary"]["remaining_on_old"] == ["n2", "n3"]
    assert "rolled-back" in (d / "rollout-report.md").read_text()
    assert "<svg" in (d / "rollout-report.html").read_text()
    # re-run after the fix: n1 is already on B (skipped), the others are pending again; n1 keeps its figures
    rollout.init(
        d, {"stack": B, "hosts": hosts}, [rec("n1", "skipped"), rec("n2", "untouched"), rec("n3", "untouched")]
    )
    doc = rollout.load(d)
    n1 = doc["nodes"][0]
    assert (n1["status"], n1["downtime_s"]) == ("done", 35.0)
    assert doc["summary"]["state"] == "in progress"


def test_records_of_hosts_outside_the_run_are_not_reported(tmp_path):
    rollout.init(tmp_path, {"stack": B, "hosts": ["n1"]}, [rec("n1", "untouched")])
    rollout.record(tmp_path, done("other", 1.0))
    assert [n["host"] for n in rollout.load(tmp_path)["nodes"]] == ["n1"]


def test_record_refuses_a_path_as_host(tmp_path):
    with pytest.raises(rollout.RecordError):
        rollout.record(tmp_path, rec("../x", "done"))


def test_command_line(tmp_path):
    def run(*args, stdin=""):
        return subprocess.run(
            [sys.executable, "-m", "h100fleet.fleet.rollout", *args, "--dir", str(tmp_path)],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).resolve().parents[2],
        )

    r = run("init", stdin=json.dumps({"rollout": {"stack": B, "hosts": ["n1"]}, "records": [rec("n1", "untouched")]}))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["state"] == "in progress"
    r = run("record", stdin=json.dumps(done("n1", 12.0)))
    assert json.loads(r.stdout)["state"] == "complete"
    r = run("record", stdin="not json")
    assert r.returncode == 2
    assert "not JSON" in r.stderr
    r = run("render")
    assert r.returncode == 0


def test_downtime_from_the_stop_to_the_status_that_showed_the_step_advancing():
    # the trainer writes updated_at with its UTC offset (h100fleet.trainer.progress.now_iso)
    stop = 1_800_000_000.0  # 2027-01-15T08:00:00Z
    assert rollout.downtime_s(stop, {"updated_at": "2027-01-15T08:00:41+0000"}) == 41.0
    assert rollout.downtime_s(stop, {"updated_at": "2027-01-15T09:00:41+0100"}) == 41.0
    assert rollout.downtime_s(stop, {"updated_at": "2027-01-15T08:00:41.5+00:00"}) == 41.5
    assert rollout.downtime_s(None, {"updated_at": "2027-01-15T08:00:41+0000"}) is None
    assert rollout.downtime_s(stop, {}) is None
    assert rollout.downtime_s(stop, {"updated_at": "yesterday"}) is None


def test_phases_add_up_to_the_downtime_and_stop_at_the_last_mark():
    marks = {"t0": 1000.0, "stopped": 1012.04, "switched": 1012.5, "probed": 1040.5}
    assert rollout.phases_s(marks, 95.0) == {"stop": 12.0, "switch": 0.5, "probe": 28.0, "start": 54.5}
    with_driver = {**marks, "driver": 1020.5, "probed": 1048.5}
    assert rollout.phases_s(with_driver, 100.0) == {
        "stop": 12.0,
        "switch": 0.5,
        "driver": 8.0,
        "probe": 28.0,
        "start": 51.5,
    }
    # a flip that failed after the switch: no probe mark, no start phase
    assert rollout.phases_s({"t0": 1000.0, "stopped": 1010.0, "switched": 1011.0}, 60.0) == {
        "stop": 10.0,
        "switch": 1.0,
    }
    assert rollout.phases_s({}, 60.0) is None
    assert rollout.phases_s(None, None) is None


@pytest.mark.parametrize(
    ("n", "serial", "sizes"),
    [
        (4, [1, 2], [1, 2, 1]),
        (10, [1, "25%"], [1, 2, 2, 2, 2, 1]),
        (3, [1, "25%"], [1, 1, 1]),  # 25% of 3 is 0: at least one
        (5, ["100%"], [5]),
        (2, [5, 1], [2]),
        (1000, [1, "25%"], [1, 250, 250, 250, 249]),
    ],
)
def test_serial_batches_as_ansible_cuts_them(n, serial, sizes):
    assert rollout.serial_batches(n, serial) == sizes


def test_ansible_cuts_the_same_batches():
    helpers = pytest.importorskip("ansible.utils.helpers")
    for n in (1, 3, 4, 7, 10, 99, 1000):
        for serial in ([1, "25%"], [2, 3], ["10%", "50%"]):
            left, sizes, item = n, [], 0
            while left:
                size = min(helpers.pct_to_int(serial[item], n), left)
                sizes.append(size)
                left -= size
                item = min(item + 1, len(serial) - 1)
            assert rollout.serial_batches(n, serial) == sizes, (n, serial)


def test_batch_number_of_a_host():
    hosts = [f"n{i}" for i in range(1, 11)]
    numbers = [rollout.batch_number(h, hosts, [1, "25%"]) for h in hosts]
    assert numbers == [1, 2, 2, 3, 3, 4, 4, 5, 5, 6]
    assert rollout.batch_number("other", hosts, [1, 2]) is None


def test_report_shows_batch_phases_and_driver_bump():
    node = done(
        "node-1",
        95.0,
        batch=2,
        phases_s={"stop": 12.0, "switch": 0.5, "probe": 28.0, "start": 54.5},
        driver_before="550.163.01",
        driver_after="580.65.06",
    )
    doc = rollout.document({"stack": B, "driver_version": "580.65.06"}, [node, done("node-2", 85.0, batch=3)])
    text = rollout.markdown(doc)
    assert "| node-1 | done | 2 |" in text
    assert "| 12.0 / 0.5 / - / 28.0 / 54.5 |" in text
    assert "| 550.163.01 -> 580.65.06 |" in text
    assert doc["summary"]["downtime_s"]["phases_median"] == {"stop": 12.0, "switch": 0.5, "probe": 28.0, "start": 54.5}
    assert "Median phases of the downtime: stop 12.0 s, switch 0.5 s, probe 28.0 s, start 54.5 s." in text


def test_downtime_ends_at_the_restarted_trainers_first_step_when_it_reports_one():
    stop = 1_800_000_000.0  # 2027-01-15T08:00:00Z
    status = {"updated_at": "2027-01-15T08:00:47+0000", "first_step_at": "2027-01-15T08:00:41.250+00:00"}
    assert rollout.downtime_s(stop, status) == 41.2
    assert rollout.downtime_s(stop, {**status, "first_step_at": None}) == 47.0


# --- the flip journal, rollback targets, lost nodes ----------------------------------------------------------------

SA = {"id": A, "lock_hash": "a" * 64, "path": "/opt/h100fleet/stacks/a"}
SB = {"id": B, "lock_hash": "b" * 64, "path": "/opt/h100fleet/stacks/b"}
S0 = {"id": "older", "lock_hash": "0" * 64, "path": "/opt/h100fleet/stacks/0"}


def test_journal_opened_before_the_stop_records_where_the_node_was():
    j = rollout.journal_open(None, kind="rollout", active=SA, previous=S0, to=SB, was_active=True, now=100, timeout=60)
    assert (j["state"], j["from"], j["to"], j["was_active"], j["step"]) == ("open", SA, SB, True, None)
    assert j["restore"] == {"current": SA, "previous": S0}
    assert j["deadline"] == 160
    j = rollout.journal_step(j, "120")
    assert j["step"] == 120
    assert rollout.journal_unfinished(j)
    closed = rollout.journal_close(j, "done", 150)
    assert (closed["state"], closed["outcome"]) == ("closed", "done")
    assert not rollout.journal_unfinished(closed)


def test_an_interrupted_flip_keeps_what_its_journal_knew_before_the_stop():
    first = rollout.journal_step(
        rollout.journal_open(None, kind="rollout", active=SA, previous=None, to=SB, was_active=True, now=1, timeout=9),
        120,
    )
    # the re-run sees a stopped trainer and current already on B: the journal still says A, active, step 120
    again = rollout.journal_open(
        first, kind="rollout", active=SB, previous=SA, to=SB, was_active=False, now=50, timeout=9
    )
    assert (again["restore"]["current"], again["was_active"], again["step"]) == (SA, True, 120)
    assert again["restore"]["previous"] is None
    assert (again["deadline"], again["resumed"]) == (59, 1)
    assert rollout.journal_step(again, 130)["step"] == 120
    # the guard put it back on A and restarted its trainer, which trained on: a new journal from what runs now
    recovered = {**first, "state": "recovered"}
    fresh = rollout.journal_open(
        recovered, kind="rollout", active=SA, previous=S0, to=SB, was_active=True, now=70, timeout=9
    )
    assert (fresh["state"], fresh["step"], fresh["restore"]["previous"], fresh["resumed"]) == ("open", None, S0, 0)


def test_journal_refuses_what_it_cannot_record():
    with pytest.raises(rollout.RecordError, match="kind"):
        rollout.journal_open(None, kind="flip", active=SA, previous=None, to=SB, was_active=True, now=1, timeout=1)
    with pytest.raises(rollout.RecordError, match="runs no stack"):
        rollout.journal_open(None, kind="rollout", active={}, previous=None, to=SB, was_active=True, now=1, timeout=1)
    with pytest.raises(rollout.RecordError, match="state 'half'"):
        rollout.journal_state({"state": "half"})


def test_rollback_target_comes_from_the_journal_and_a_second_rollback_does_nothing():
    done_j = rollout.journal_close(
        rollout.journal_open(None, kind="rollout", active=SA, previous=None, to=SB, was_active=True, now=1, timeout=9),
        "done",
        5,
    )
    first = rollout.rollback_target(done_j, "", SB, SA)
    assert (first["action"], first["target"]) == ("switch", SA)
    after = rollout.journal_close(
        rollout.journal_open(done_j, kind="rollback", active=SB, previous=SA, to=SA, was_active=True, now=9, timeout=9),
        "reverted",
        10,
    )
    assert after["restore"] == {"current": SA, "previous": SB}
    assert rollout.rollback_target(after, "", SA, SB)["action"] == "none"
    # an unfinished flip that the guard already put back on A: finish (confirm and close), do not toggle
    recovered = {**done_j, "state": "recovered"}
    assert rollout.rollback_target(recovered, None, SA, None)["action"] == "finish"
    # an explicit target, and refusals
    assert rollout.rollback_target(None, A, SB, SA)["target"] == SA
    assert rollout.rollback_target(None, "", SB, SA)["action"] == "refuse"
    refused = rollout.rollback_target(done_j, "nope", SB, SA)
    assert refused["action"] == "refuse" and "neither the node's current stack" in refused["reason"]


def test_lost_nodes_are_unreachable_with_their_state_unknown(tmp_path):
    rollout.init(
        tmp_path, {"stack": B, "hosts": ["n1", "n2"]}, [rec("n1", "untouched", batch=2), rec("n2", "untouched")]
    )
    doc = rollout.mark_lost(tmp_path, ["n1"], "lost during batch 2")
    n1 = doc["nodes"][0]
    assert (n1["status"], n1["batch"], n1["old_stack"]) == ("unreachable", 2, A)
    assert n1["error"] == "unreachable (state unknown): lost during batch 2"
    assert doc["summary"]["state"] == "halted"
    assert doc["summary"]["unreachable"] == ["n1"]
    md = (tmp_path / "rollout-report.md").read_text()
    assert "Unreachable (state unknown): n1" in md
    assert "Needs attention: n1: unreachable (state unknown): lost during batch 2" in md


def test_complete_needs_every_trainer_that_ran_to_run_again():
    stopped = done("a", 10.0, was_active=True, service_state="inactive")
    doc = rollout.document({"stack": B}, [stopped, done("b", 10.0, was_active=True)])
    assert doc["summary"]["state"] == "in progress"
    assert doc["summary"]["not_training"] == ["a"]
    idle = done("a", None, was_active=False, service_state="inactive")
    assert rollout.document({"stack": B}, [idle])["summary"]["state"] == "complete"


def test_record_update_keeps_the_other_fields(tmp_path):
    rollout.record(tmp_path, done("n1", 12.0, batch=1))
    doc = rollout.record(tmp_path, {"host": "n1", "status": "reverted", "note": "rollback.yml"}, update=True)
    n1 = doc["nodes"][0]
    assert (n1["status"], n1["batch"], n1["note"]) == ("reverted", 1, "rollback.yml")
    assert doc["summary"]["state"] == "rolled back"


def test_a_job_over_several_nodes_must_move_in_one_batch():
    hosts = ["a1", "a2", "b1", "c1", "c2"]
    jobs = {"a1": "job_a", "a2": "job_a", "c1": "job_c", "c2": "job_c"}
    # canary 1, then 25% of 5 = 1: a1 | a2 | b1 | c1 | c2
    problem = rollout.job_batch_problem("a2", hosts, [1, "25%"], jobs)
    assert problem == (
        "the nodes of job job_a must move in one batch (a flip stops the whole job; its nodes train it only on one "
        "stack), but a1 in batch 1, a2 in batch 2 (batch sizes [1, 1, 1, 1, 1] from rollout_canary and "
        "rollout_batch over 5 pending nodes in inventory order): choose a canary and batch size that keep them "
        "together (e.g. -e rollout_canary=2 when they come first) or list the job's nodes next to each other"
    )
    assert rollout.job_batch_problem("a1", hosts, [1, "25%"], jobs) == problem  # the same for every node of the job
    assert rollout.job_batch_problem("b1", hosts, [1, "25%"], jobs) is None  # in no job
    # canary 2, then 3: a1 a2 | b1 c1 c2: both jobs whole
    assert all(rollout.job_batch_problem(h, hosts, [2, 3], jobs) is None for h in hosts)
    # canary 2, then 2: a1 a2 | b1 c1 | c2: job_c split
    assert rollout.job_batch_problem("c2", hosts, [2, 2], jobs).startswith("the nodes of job job_c must move")
    assert rollout.job_batch_problem("a1", hosts, [2, 2], jobs) is None


def test_a_job_whose_other_nodes_moved_already_is_no_problem():
    # a1 is on the new stack already (not pending): a2 moves alone, in whichever batch.
    assert rollout.job_batch_problem("a2", ["a2", "b1"], [1, 1], {"a1": "job_a", "a2": "job_a"}) is None
    assert rollout.job_batch_problem("a1", ["a2", "b1"], [1, 1], {"a1": "job_a", "a2": "job_a"}) is None

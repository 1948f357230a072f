"""Checkpoint directories without torch: atomic writes, manifests and checksums, corrupt and partial checkpoints
skipped, retention; plus the learning-rate schedule, the batch-fit rule and the journald log format."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os

import pytest

from h100fleet.trainer import autotune, checkpoint, logs, progress
from h100fleet.trainer.checkpoint import latest_valid, verify, write_dir
from h100fleet.trainer.train import Schedule


def files(**content: bytes):
    def writer(tmp):
        for name, body in content.items():
            (tmp / name).write_bytes(body)

    return writer


def make(directory, step, **extra):
    return write_dir(directory / checkpoint.name_for(step), files(a=b"A" * step, b=b"B"), {"step": step, **extra})


def test_write_dir_produces_a_verified_manifest_and_no_leftovers(tmp_path):
    seconds = make(tmp_path, 5, samples_seen=40)
    assert seconds >= 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000005"]
    manifest, problem = verify(tmp_path / "step-00000005")
    assert problem is None
    assert manifest["step"] == 5 and manifest["samples_seen"] == 40 and manifest["format"] == 1
    assert manifest["files"]["a"] == {"bytes": 5, "sha256": checkpoint.sha256_file(tmp_path / "step-00000005/a")}
    assert set(manifest["files"]) == {"a", "b"}


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda d: (d / "manifest.json").unlink(), "no manifest.json (incomplete)"),
        (lambda d: (d / "manifest.json").write_text("{"), "manifest.json unreadable (JSONDecodeError)"),
        (lambda d: (d / "a").unlink(), "a missing"),
        (lambda d: (d / "a").write_bytes(b"AAA"), "a has 3 bytes, manifest says 4"),
        (lambda d: (d / "a").write_bytes(b"AAAX"), "a checksum mismatch"),
        (
            lambda d: (d / "manifest.json").write_text(
                (d / "manifest.json").read_text().replace('"samples_seen": 1', '"samples_seen": 2')
            ),
            "manifest checksum mismatch",
        ),
    ],
)
def test_verify_finds_each_kind_of_damage(tmp_path, damage, problem):
    make(tmp_path, 4, samples_seen=1)
    damage(tmp_path / "step-00000004")
    assert verify(tmp_path / "step-00000004") == (None, problem)


def test_a_renamed_checkpoint_does_not_pass_for_another_step(tmp_path):
    make(tmp_path, 4)
    os.rename(tmp_path / "step-00000004", tmp_path / "step-00000009")
    assert verify(tmp_path / "step-00000009") == (None, "manifest step 4 does not match the directory name")


def test_resume_takes_the_newest_valid_checkpoint_and_moves_corrupt_ones_aside(tmp_path):
    for step in (2, 4, 6):
        make(tmp_path, step)
    (tmp_path / "step-00000006" / "a").write_bytes(b"X" * 6)  # same size, different content
    (tmp_path / "step-00000008").mkdir()  # a directory that never got its manifest
    found = latest_valid(tmp_path)
    assert found is not None and found.step == 4 and found.path.name == "step-00000004"
    names = sorted(p.name for p in tmp_path.iterdir())
    assert [n.rsplit("-", 1)[0] for n in names[:2]] == ["corrupt-step-00000006", "corrupt-step-00000008"]
    assert names[2:] == ["step-00000002", "step-00000004"]
    # The step of a corrupt checkpoint can be written again.
    make(tmp_path, 6)
    assert latest_valid(tmp_path).step == 6


def test_an_interrupted_write_leaves_nothing_that_counts(tmp_path):
    make(tmp_path, 3)

    def crash(tmp):
        (tmp / "a").write_bytes(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_dir(tmp_path / "step-00000006", crash, {"step": 6})
    assert latest_valid(tmp_path).step == 3
    assert [p.name for p in checkpoint.clean_partial(tmp_path)] == [f".tmp-step-00000006-{os.getpid()}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000003"]


def test_rewriting_a_step_replaces_it(tmp_path):
    make(tmp_path, 3)
    write_dir(tmp_path / "step-00000003", files(c=b"C"), {"step": 3, "finished": True})
    manifest, _ = verify(tmp_path / "step-00000003")
    assert manifest["finished"] is True and set(manifest["files"]) == {"c"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000003"]


def test_prune_keeps_the_newest(tmp_path):
    for step in (1, 2, 10, 11):
        make(tmp_path, step)
    removed = checkpoint.prune(tmp_path, keep_last=2)
    assert [p.name for p in removed] == ["step-00000002", "step-00000001"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000010", "step-00000011"]


def test_write_json_atomic(tmp_path):
    path = tmp_path / "status.json"
    checkpoint.write_json_atomic(path, {"step": 1})
    checkpoint.write_json_atomic(path, {"step": 2})
    assert json.loads(path.read_text()) == {"step": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]


def test_learning_rate_schedule():
    linear = Schedule("linear", warmup=4, total=14)
    assert [round(linear(s), 3) for s in range(5)] == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert linear(9) == 0.5 and linear(14) == 0.0 and linear(20) == 0.0
    cosine = Schedule("cosine", warmup=0, total=10)
    assert cosine(0) == 1.0 and math.isclose(cosine(5), 0.5) and math.isclose(cosine(10), 0.0, abs_tol=1e-12)
    assert Schedule("constant", warmup=2, total=10)(7) == 1.0


class _Train:
    def __init__(self, **kw):
        self.global_batch_size = kw.get("global_batch_size")
        self.gradient_accumulation_steps = kw.get("gradient_accumulation_steps", 1)
        self.auto_max_batch_size = kw.get("auto_max_batch_size", 16)


class _Cfg:
    def __init__(self, **kw):
        self.train = _Train(**kw)


def test_batch_fit_rule():
    gib = autotune.GIB
    # The measured Unsloth line on an H100 (H100-BASELINE.md): 24.6 GiB at batch 1, +8.6 GiB per sequence.
    a, s = 16.0 * gib, 8.6 * gib
    budget = 0.9 * 79.6 * gib
    assert autotune.fit_batch(a, s, 0.4 * gib, budget, list(range(1, 17))) == 6
    assert autotune.fit_batch(a, s, 0.4 * gib, budget, [1, 2, 4, 8, 16]) == 4
    assert autotune.fit_batch(a, 80 * gib, 0, budget, [1, 2]) is None
    assert autotune.allowed_batches(_Cfg(), 5) == [1, 2, 3, 4, 5]
    assert autotune.allowed_batches(_Cfg(auto_max_batch_size=3), 5) == [1, 2, 3]
    assert autotune.allowed_batches(_Cfg(global_batch_size=12), 100) == [1, 2, 3, 4, 6, 12]
    assert autotune.accumulation(_Cfg(global_batch_size=12), 4) == 3
    assert autotune.accumulation(_Cfg(gradient_accumulation_steps=5), 4) == 5


def test_plan_round_trip():
    plan = autotune.Plan(4, 2, True, "auto", "because", [{"batch": 1}])
    again = autotune.Plan.from_dict(plan.to_dict(), source="checkpoint")
    assert (again.batch_size, again.gradient_accumulation_steps, again.gradient_checkpointing) == (4, 2, True)
    assert (again.source, again.reason) == ("checkpoint", "because")
    assert autotune.describe(plan) == (
        "batch_size=4 gradient_accumulation_steps=2 gradient_checkpointing=True (auto: because)"
    )


def test_log_lines_are_single_lines_with_journald_priorities():
    record = logging.LogRecord("h100fleet.trainer", logging.WARNING, __file__, 1, "two\nlines %s", ("x",), None)
    assert logs.OneLineFormatter(journald=True).format(record) == "<4>h100fleet.trainer: two | lines x"
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = logs.OneLineFormatter(journald=True).format(record)
    assert line.startswith("<3>t: failed | Traceback (most recent call last): | ")
    assert line.endswith("ValueError: boom") and "\n" not in line
    plain = logs.OneLineFormatter(journald=False).format(
        logging.LogRecord("t", logging.INFO, __file__, 1, "hi", (), None)
    )
    assert plain.endswith(" INFO t: hi")


def test_durations():
    assert progress.fmt_duration(None) == "?"
    assert progress.fmt_duration(59.9) == "0m59s"
    assert progress.fmt_duration(3 * 3600 + 61) == "3h01m01s"


def test_a_stop_signal_before_training_ends_the_run_even_when_a_library_swallows_it():
    import signal as signals

    from h100fleet.trainer.stop import StopBeforeTraining, StopRequest

    stop = StopRequest()
    stop.set_immediate(True)
    # the handler raises inside whatever code runs; here that code catches everything, as some libraries do
    with contextlib.suppress(BaseException):
        stop._handler(signals.SIGTERM, None)
    assert stop.requested and not stop.immediate
    with pytest.raises(StopBeforeTraining):
        stop.set_immediate(False)  # where training would start
    stop.set_immediate(False)  # raised once

    plain = StopRequest()
    plain.set_immediate(True)
    plain.set_immediate(False)  # no signal: training starts
    plain._handler(signals.SIGTERM, None)  # a signal during training only sets the flag
    assert plain.requested

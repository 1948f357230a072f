"""The trainer's status file as the training_service role reads it (h100fleet.fleet.trainer_status)."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import pytest

from h100fleet.fleet import trainer_status

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "roles/training_service/filter_plugins"))
import training_service as role_filters


def slurped(doc) -> dict:
    text = doc if isinstance(doc, str) else json.dumps(doc)
    return {"content": base64.b64encode(text.encode()).decode(), "encoding": "base64"}


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"train": {"output_dir": "/var/lib/h100fleet/trainer"}}, "/var/lib/h100fleet/trainer/status.json"),
        ({"train": {"output_dir": "/srv/run/"}, "progress": {"status_file": None}}, "/srv/run/status.json"),
        (
            {"train": {"output_dir": "/srv/run"}, "progress": {"status_file": "/run/t/status.json"}},
            "/run/t/status.json",
        ),
    ],
)
def test_path_is_the_trainers_default_or_the_configs(config, expected):
    assert trainer_status.path(config) == expected
    assert role_filters.training_service_status_file(config) == expected


@pytest.mark.parametrize(
    ("result", "finished"),
    [
        (slurped({"state": "finished", "step": 6000, "total_steps": 6000}), True),
        (slurped({"state": "training", "step": 10}), False),
        (slurped({"state": "stopped", "step": 200}), False),
        (slurped("not json"), False),
        (slurped(["finished"]), False),
        ({"failed": True, "msg": "file not found"}, False),  # slurp with failed_when: false, no file yet
        ({"skipped": True}, False),
        (None, False),
    ],
)
def test_finished_only_when_the_trainer_said_so(result, finished):
    assert trainer_status.finished(result) is finished
    assert role_filters.training_service_job_finished(result) is finished

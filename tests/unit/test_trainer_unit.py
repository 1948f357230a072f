"""How many trainer processes the training unit starts on a node, and how (h100fleet.fleet.trainer_unit)."""

from __future__ import annotations

import pytest

from h100fleet.fleet import trainer_unit


@pytest.mark.parametrize(
    ("setting", "visible", "device", "node_gpus", "expected"),
    [
        ("auto", "", "cuda", 8, 8),  # an HGX node: every GPU
        ("auto", "", "auto", 1, 1),
        ("auto", "4,5,6,7", "cuda", 8, 4),  # the pinned GPUs
        ("auto", "GPU-0a1b,GPU-2c3d", "cuda", 8, 2),
        ("auto", "", "cuda", 0, 1),  # no GPU known: one process (the trainer fails naming the missing GPU)
        ("auto", "", "cpu", 8, 1),
        (4, "", "cuda", 8, 4),
        (2, "", "cpu", 0, 2),  # gloo processes on the CPU
    ],
)
def test_processes_per_node(setting, visible, device, node_gpus, expected):
    assert trainer_unit.nproc_problem(setting, visible, device, node_gpus) is None
    assert trainer_unit.nproc_per_node(setting, visible, device, node_gpus) == expected


@pytest.mark.parametrize(
    ("setting", "visible", "node_gpus", "message"),
    [
        (9, "", 8, "training_service_nproc_per_node is 9 but the node has 8 GPU(s)"),
        (3, "0,1", 8, "training_service_cuda_visible_devices '0,1' gives the unit 2 GPU(s)"),
        (0, "", 8, 'training_service_nproc_per_node is 0; expected "auto" or a whole number'),
        (True, "", 8, "training_service_nproc_per_node is True"),
    ],
)
def test_more_processes_than_gpus_is_refused_by_name(setting, visible, node_gpus, message):
    assert message in trainer_unit.nproc_problem(setting, visible, "cuda", node_gpus)


def test_one_process_runs_plainly_several_through_torchrun():
    py, cfg = "/opt/h100fleet/stacks/current/bin/python", "/etc/h100fleet/trainer.yml"
    assert trainer_unit.exec_start(py, cfg, 1) == f"{py} -m h100fleet.trainer --config {cfg}"
    assert trainer_unit.exec_start(py, cfg, 8) == f"{py} -m h100fleet.trainer.launch --nproc-per-node 8 --config {cfg}"

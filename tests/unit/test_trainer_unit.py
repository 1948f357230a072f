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


JOB = {"nnodes": 2, "group": "job_a", "endpoint": "node-a:29400", "id": "job_a", "uid": 2101, "gid": 2101}
GROUPS = {"job_a": ["node-a", "node-b"], "all": ["node-a", "node-b", "node-c"]}


def test_a_node_of_a_multi_node_job_joins_the_rendezvous():
    py, cfg = "/opt/h100fleet/stacks/current/bin/python", "/etc/h100fleet/trainer.yml"
    assert trainer_unit.exec_start(py, cfg, 8, JOB) == (
        f"{py} -m h100fleet.trainer.launch --nproc-per-node 8 --nnodes 2 --rdzv-endpoint node-a:29400 "
        f"--rdzv-id job_a --config {cfg}"
    )
    # One process per node still runs the launcher (the rendezvous is torchrun's).
    assert trainer_unit.exec_start(py, cfg, 1, JOB).startswith(f"{py} -m h100fleet.trainer.launch --nproc-per-node 1")
    one_node = {"nnodes": 1, "group": "", "endpoint": "", "id": ""}
    assert trainer_unit.exec_start(py, cfg, 1, one_node) == f"{py} -m h100fleet.trainer --config {cfg}"
    assert trainer_unit.job_problems("node-a", JOB, GROUPS) == []
    assert trainer_unit.job_problems("node-a", {**JOB, "nnodes": "2"}, GROUPS) == []  # a templated number
    assert trainer_unit.job_problems("solo", one_node, GROUPS) == []
    # No group: the endpoint and the id as set.
    assert trainer_unit.job_problems("x", {**JOB, "group": ""}, GROUPS) == []


@pytest.mark.parametrize(
    ("host", "job", "message"),
    [
        ("node-a", {**JOB, "endpoint": ""}, "training_service_nnodes is 2 but training_service_rdzv_endpoint is empty"),
        ("node-a", {**JOB, "id": ""}, "training_service_nnodes is 2 but training_service_rdzv_id is empty"),
        ("node-a", {**JOB, "endpoint": "node-a"}, "training_service_rdzv_endpoint is 'node-a'; expected host:port"),
        ("node-a", {**JOB, "nnodes": 3}, "training_service_job_group 'job_a' has 2 host(s) (node-a, node-b)"),
        ("node-c", JOB, "node-c is not in its training_service_job_group 'job_a' (node-a, node-b)"),
        ("node-a", {**JOB, "group": "job_z"}, "training_service_job_group 'job_z' is not a group of the inventory"),
        ("node-a", {**JOB, "nnodes": 0}, "training_service_nnodes is 0; expected a whole number of at least 1"),
        ("node-a", {**JOB, "uid": None}, "training_service_nnodes is 2 but training_service_uid is not set: the job's"),
        ("node-a", {**JOB, "uid": "", "gid": ""}, "training_service_uid and training_service_gid are not set"),
        # A group of two with the default of one node: the node count is said, not guessed.
        ("node-a", {**JOB, "nnodes": 1}, "training_service_nnodes is 1 but training_service_job_group 'job_a' has 2"),
    ],
)
def test_a_job_that_cannot_meet_is_refused_by_name(host, job, message):
    assert any(message in p for p in trainer_unit.job_problems(host, job, GROUPS)), trainer_unit.job_problems(
        host, job, GROUPS
    )


@pytest.mark.parametrize(
    ("endpoint", "ok"),
    [
        ("node-a:29400", True),
        ("10.1.2.3:29400", True),
        ("[fd00::5]:29400", True),
        ("node-a.example.org:1", True),
        ("node-a", False),
        ("node-a:", False),
        (":29400", False),
        ("node-a:0", False),
        ("node-a:65536", False),
        ("node a:29400", False),
        ("-node:29400", False),
        (29400, False),
    ],
)
def test_rendezvous_endpoint_is_host_colon_port(endpoint, ok):
    assert (trainer_unit.endpoint_problem(endpoint) is None) == ok


MOUNTS = [
    {"mount": "/", "fstype": "ext4"},
    {"mount": "/shared", "fstype": "nfs4"},
    {"mount": "/shared/scratch", "fstype": "xfs"},
    {"mount": "/lus", "fstype": "lustre"},
]


def test_the_mount_of_a_path_is_the_longest_mount_point_above_it():
    assert trainer_unit.mount_of("/shared/jobs/a", MOUNTS)["fstype"] == "nfs4"
    assert trainer_unit.mount_of("/shared/scratch/a", MOUNTS)["fstype"] == "xfs"
    assert trainer_unit.mount_of("/shared", MOUNTS)["fstype"] == "nfs4"
    assert trainer_unit.mount_of("/sharedx/a", MOUNTS)["fstype"] == "ext4"  # not under /shared
    assert trainer_unit.mount_of("/var/lib/x", MOUNTS)["mount"] == "/"
    assert trainer_unit.mount_of("/var/lib/x", [{"mount": "/srv", "fstype": "nfs"}]) is None


def test_a_multi_node_job_keeps_its_output_on_shared_storage():
    fstypes = trainer_unit.SHARED_FSTYPES
    ok = {"training_service_state_dir": "/shared/jobs/a", "checkpoint.dir": "/lus/ckpt/a"}
    assert trainer_unit.shared_storage_problems("n1", ok, MOUNTS, fstypes) == []
    bad = {"training_service_state_dir": "/var/lib/h100fleet/trainer", "checkpoint.dir": "/shared/scratch/a"}
    problems = trainer_unit.shared_storage_problems("n1", bad, MOUNTS, fstypes)
    assert problems[0].startswith(
        "n1: training_service_state_dir /var/lib/h100fleet/trainer is on / (ext4), not shared storage"
    )
    assert problems[1].startswith("n1: checkpoint.dir /shared/scratch/a is on /shared/scratch (xfs)")
    assert "training_service_shared_fstypes: nfs, nfs4, lustre" in problems[0]
    assert trainer_unit.shared_storage_problems("n1", {"x": "/a"}, [], fstypes) == [
        "n1: x /a is on no mount the node reports; it must be on shared storage"
    ]

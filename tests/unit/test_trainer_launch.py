"""The multi-process entry point's exit-code mapping and torchrun arguments (no torch needed); its runs under
torchrun are in test_trainer_torch_launch.py."""

from __future__ import annotations

import pytest

from h100fleet.trainer import launch


@pytest.mark.parametrize(
    ("codes", "expected"),
    [
        ({0: 0, 1: 0}, 0),  # finished, or stopped after a checkpoint
        ({0: 1, 1: 0}, 1),  # a crash: restarted, resumes
        ({0: -9, 1: 1}, 1),  # a killed rank and the rank that timed out waiting for it
        ({0: 1, 1: 65}, 65),  # a malformed dataset: not restarted, whatever the other ranks say
        ({0: 78, 1: 65}, 78),  # the lowest rank's no-restart code
    ],
)
def test_the_unit_sees_the_workers_no_restart_codes(codes, expected):
    assert launch.exit_code(codes) == expected


def test_one_node_is_standalone_and_several_meet_at_the_rendezvous():
    args = launch.parser().parse_args(["--nproc-per-node", "8", "--config", "/etc/h100fleet/trainer.yml"])
    assert launch.torchrun_argv(args) == [
        "--standalone", "--nproc-per-node", "8", "--max-restarts", "0", "-m", "h100fleet.trainer",
        "--config", "/etc/h100fleet/trainer.yml",
    ]  # fmt: skip
    argv = ["--nproc-per-node", "8", "--nnodes", "2", "--rdzv-endpoint", "n1:29400", "--rdzv-id", "job-7"]
    args = launch.parser().parse_args([*argv, "--config", "c.yml"])
    assert launch.torchrun_argv(args)[:8] == [
        "--nnodes", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", "n1:29400", "--rdzv-id", "job-7",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--nproc-per-node", "0", "--config", "c.yml"], "expected a whole number of at least 1, got 0"),
        (["--nproc-per-node", "2", "--nnodes", "2", "--config", "c.yml"], "needs --rdzv-endpoint and --rdzv-id"),
    ],
)
def test_a_bad_command_line_exits_64_and_says_why(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        launch.main(argv)
    assert exc.value.code == 64 and message in capsys.readouterr().err

"""training_service: the preflight refuses bad settings by name, and what the role renders is what the node needs.

One ansible-playbook run of tests/playbooks/training_service_render.yml (connection local, tags
training_service_preflight and render) over an inventory in which every test case is a host: the role's argument
validation and preflight run for each, and for the cases that pass, the trainer config (validated by the trainer's
own --check, as the role does on a node), the environment file and the units are rendered from the role's
templates. The unit's exposure is measured with `systemd-analyze security --offline=true` where the control node
has a systemd that can (250 or newer).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO, run_role_cases

from h100fleet.trainer import config as trainer_config
from h100fleet.trainer.exitcodes import NO_RESTART

PLAYBOOK = REPO / "tests" / "playbooks" / "training_service_render.yml"
MAX_EXPOSURE = 2.0
STACK = "torch2.3-unsloth2024.8-py310"
SECRET = "hf_t3st-\"dq\" 'sq' $HOME `tick` \\back"


def local_fstype(path: str) -> str:
    """The filesystem type this machine keeps path on (its longest mount point above path)."""
    best = ("", "")
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point, fstype = line.split()[1], line.split()[2]
        if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best[0]):
            best = (point, fstype)
    return best[1]


# A job over two nodes of eight GPUs (the inventory group job_a); the test accepts this machine's filesystem as
# shared storage, where a node would have NFS or Lustre.
TWO_NODES = {
    "ansible_local": {"h100fleet_node": {"gpu_count": 8}},
    "training_service_job_group": "job_a",
    "training_service_nnodes": 2,
    "training_service_uid": 2101,
    "training_service_gid": 2101,
    "training_service_shared_fstypes": [local_fstype("/var/lib/h100fleet/trainer")],
    "training_service_nccl_socket_ifname": "^docker,lo",
    "training_service_nccl_ib_hca": "mlx5_0:1,mlx5_1:1",
}
IDS = {"training_service_uid": 2101, "training_service_gid": 2101}
# Inventory groups (a group per job): name -> its cases.
GROUPS = {
    "job_a": ["job-a-1", "job-a-2"],
    "job_b": ["count-not-the-group"],
    "job_c": ["local-disk-1", "local-disk-2"],
}

# Cases that pass the preflight: id -> settings (the stack root and render_dir are added per case).
RENDERED: dict[str, dict] = {
    "default": {},
    "tuned": {
        "training_service_secrets": {"HF_TOKEN": SECRET},
        "training_service_environment": {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"},
        "training_service_config": {
            "train": {"epochs": 3, "global_batch_size": 16, "learning_rate": "2e-4"},
            "checkpoint": {"every_steps": 50},
            "data": {"max_seq_length": 4096},
        },
        "training_service_cache_dirs": ["/var/cache/h100fleet/compile"],
    },
    "second-gpu": {
        "training_service_instance": "trainer-gpu1",
        "training_service_cuda_visible_devices": "1",
        "training_service_stack_id": "pinned-id",
    },
    "cpu-no-devices": {
        "training_service_device": "cpu",
        "training_service_backend": "hf",
        "training_service_cuda_visible_devices": "",
    },
    "eight-gpus": {"ansible_local": {"h100fleet_node": {"gpu_count": 8}}},
    "four-pinned": {
        "ansible_local": {"h100fleet_node": {"gpu_count": 8}},
        "training_service_cuda_visible_devices": "4,5,6,7",
    },
    "checkpoints-in-a-cache-dir": {
        "training_service_cache_dirs": ["/scratch/ckpt"],
        "training_service_config": {"checkpoint": {"dir": "/scratch/ckpt/run1"}},
    },
    "job-a-1": TWO_NODES,
    "job-a-2": TWO_NODES,
    # No job group: the endpoint and the id set, one CPU process on each of two nodes.
    "two-nodes-by-endpoint": {
        "training_service_nnodes": 2,
        "training_service_rdzv_endpoint": "10.0.0.5:29500",
        "training_service_rdzv_id": "job-7",
        "training_service_uid": 2101,
        "training_service_gid": 2101,
        "training_service_shared_fstypes": [local_fstype("/var/lib/h100fleet/trainer")],
        "training_service_device": "cpu",
        "training_service_backend": "hf",
    },
}

# Cases the preflight (or the argument specs) refuses: id -> (settings, text the failure must contain).
REFUSED: dict[str, tuple[dict, str]] = {
    "relative-model": (
        {"training_service_model_path": "models/llama"},
        "training_service_model_path 'models/llama' and training_service_data_path",
    ),
    "relative-state-dir": ({"training_service_state_dir": "var/lib/x"}, "absolute paths without spaces"),
    "output-dir-in-config": (
        {"training_service_config": {"train": {"output_dir": "/data/out"}}},
        "training_service_config sets train.output_dir '/data/out': set training_service_state_dir instead",
    ),
    "checkpoints-outside": (
        {"training_service_config": {"checkpoint": {"dir": "/data/ckpt"}}},
        "writes outside the state directory and training_service_cache_dirs",
    ),
    "reserved-env-name": (
        {"training_service_environment": {"CUDA_VISIBLE_DEVICES": "1"}},
        "CUDA_VISIBLE_DEVICES, CUDA_DEVICE_ORDER and H100FLEET_STACK_ID come from",
    ),
    "bad-env-name": ({"training_service_secrets": {"HF-TOKEN": "x"}}, "names must be letters, digits and _"),
    "multi-line-secret": ({"training_service_secrets": {"KEY": "a\nb"}}, "values a single line"),
    "bad-instance": ({"training_service_instance": "Trainer 1"}, "training_service_instance 'Trainer 1' must be"),
    "bad-visible-devices": (
        {"training_service_cuda_visible_devices": "0; rm"},
        "training_service_cuda_visible_devices is '0; rm'; expected a CUDA_VISIBLE_DEVICES list",
    ),
    "more-processes-than-gpus": (
        {"ansible_local": {"h100fleet_node": {"gpu_count": 8}}, "training_service_nproc_per_node": 9},
        "training_service_nproc_per_node is 9 but the node has 8 GPU(s): one process per GPU (on "
        "more-processes-than-gpus)",
    ),
    "more-processes-than-pinned": (
        {"training_service_cuda_visible_devices": "0,1", "training_service_nproc_per_node": 4},
        "training_service_nproc_per_node is 4 but training_service_cuda_visible_devices '0,1' gives the unit 2",
    ),
    "nproc-a-string": ({"training_service_nproc_per_node": "8"}, "training_service_nproc_per_node is '8'"),
    "no-stack": ({"__no_stack": True}, "bin/python does not exist on no-stack: the training service runs the"),
    "enabled-without-model": (
        {"training_service_enabled": True},
        "training_service_enabled is true but",
    ),
    "two-nodes-no-endpoint": (
        {"training_service_nnodes": 2},
        "training_service_nnodes is 2 but training_service_rdzv_endpoint is empty: set training_service_job_group",
    ),
    "two-nodes-no-id": (
        {"training_service_nnodes": 2, "training_service_rdzv_endpoint": "head:29400"},
        "training_service_nnodes is 2 but training_service_rdzv_id is empty",
    ),
    "endpoint-not-host-port": (
        {"training_service_nnodes": 2, "training_service_rdzv_endpoint": "head", "training_service_rdzv_id": "j"},
        "training_service_rdzv_endpoint is 'head'; expected host:port",
    ),
    "endpoint-port-out-of-range": (
        {"training_service_rdzv_endpoint": "head:70000"},
        "training_service_rdzv_endpoint is 'head:70000'; expected host:port",
    ),
    "two-nodes-no-ids": (
        {"training_service_nnodes": 2, "training_service_rdzv_endpoint": "head:29400", "training_service_rdzv_id": "j"},
        "training_service_nnodes is 2 but training_service_uid and training_service_gid are not set",
    ),
    "count-not-the-group": (
        {"training_service_job_group": "job_b", "training_service_nnodes": 2, **IDS},
        "training_service_nnodes is 2 but training_service_job_group 'job_b' has 1 host(s) (count-not-the-group): "
        "one node per host of the job's group (on count-not-the-group)",
    ),
    "job-group-unknown": (
        {"training_service_job_group": "job_z"},
        "training_service_job_group 'job_z' is not a group of the inventory",
    ),
    "local-disk-1": (
        {"training_service_job_group": "job_c", "training_service_nnodes": 2, **IDS},
        "local-disk-1: training_service_state_dir /var/lib/h100fleet/trainer is on",
    ),
    "local-disk-2": (
        {
            "training_service_job_group": "job_c",
            "training_service_nnodes": 2,
            **IDS,
            "training_service_cache_dirs": ["/scratch/ckpt"],
            "training_service_config": {"checkpoint": {"dir": "/scratch/ckpt/run1"}},
        },
        "not shared storage: every node of the job reads and writes its checkpoints there",
    ),
    "bad-nccl-interface": (
        {"training_service_nccl_socket_ifname": "eth0; rm"},
        "training_service_nccl_socket_ifname is 'eth0; rm'; expected",
    ),
    "nccl-in-environment": (
        {"training_service_environment": {"NCCL_IB_HCA": "mlx5_0"}},
        "NCCL_SOCKET_IFNAME and NCCL_IB_HCA from training_service_nccl_socket_ifname",
    ),
    # Types and choices: the argument specs, before any task runs.
    "unknown-backend": ({"training_service_backend": "deepspeed"}, "training_service_backend"),
    "timeout-not-int": ({"training_service_timeout_stop_sec": "long"}, "training_service_timeout_stop_sec"),
}


def fake_stack(root: Path, stack_id: str = STACK) -> Path:
    """A stack root whose current/bin/python is this interpreter (which imports h100fleet) and a marker."""
    venv = root / f"{stack_id}-py3.11-000000000000"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    (venv / "h100fleet-stack.json").write_text(json.dumps({"id": stack_id}))
    (root / "current").symlink_to(venv)
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Run every case once; return (host -> failure message or None, render directory of each case)."""
    tmp = tmp_path_factory.mktemp("training_service")
    stack = fake_stack(tmp / "stacks")
    cases = {**RENDERED, **{name: settings for name, (settings, _) in REFUSED.items()}}
    hosts = {}
    for name, given in cases.items():
        settings = dict(given)
        hosts[name] = {
            "render_dir": str(tmp / name),
            "training_service_stack_root": str(tmp / "none") if settings.pop("__no_stack", False) else str(stack),
            "training_service_enabled": False,
            **settings,
        }
    pythonpath = os.pathsep.join(p for p in [str(REPO / "src"), os.environ.get("PYTHONPATH", "")] if p)
    failures = run_role_cases(
        PLAYBOOK,
        tmp,
        "training_service_cases",
        hosts,
        tags="training_service_preflight,render",
        children=GROUPS,
        PYTHONPATH=pythonpath,
    )
    return failures, tmp


def rendered(run, case: str) -> Path:
    failures, tmp = run
    assert failures[case] is None, failures[case]
    return tmp / case


def unit_options(path: Path) -> dict[str, list[str]]:
    options: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            options.setdefault(key, []).append(value)
    return options


def env_file(path: Path) -> dict[str, str]:
    """Parse an EnvironmentFile the way systemd does for what the role writes: plain words, and double-quoted
    values in which backslash, double quote, backtick and dollar are escaped with a backslash."""
    values = {}
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        key, raw = line.split("=", 1)
        if raw.startswith('"'):
            assert raw.endswith('"') and len(raw) > 1, line
            values[key] = re.sub(r'\\([\\"`$])', r"\1", raw[1:-1])
        else:
            assert re.fullmatch(r"[A-Za-z0-9_.:,/-]*", raw), line  # nothing systemd would interpret
            values[key] = raw
    return values


# --- the unit -----------------------------------------------------------------------------------------------------


def test_unit_runs_the_stack_trainer_and_never_restarts_what_a_restart_cannot_fix(run):
    out = rendered(run, "default")
    o = unit_options(out / "h100fleet-trainer.service")
    stack = out.parent / "stacks"
    assert o["ExecStart"] == [f"{stack}/current/bin/python -m h100fleet.trainer --config /etc/h100fleet/trainer.yml"]
    assert o["RestartPreventExitStatus"] == [" ".join(map(str, NO_RESTART))]
    assert o["Restart"] == ["on-failure"] and o["KillSignal"] == ["SIGTERM"] and o["TimeoutStopSec"] == ["600"]
    assert o["StartLimitIntervalSec"] == ["1800"] and o["StartLimitBurst"] == ["5"]  # in [Unit]
    unit_section = (out / "h100fleet-trainer.service").read_text().split("[Service]")[0]
    assert "StartLimitBurst=5" in unit_section
    assert o["User"] == ["h100fleet-trainer"] and o["EnvironmentFile"] == ["/etc/h100fleet/trainer.env"]
    assert o["ReadWritePaths"] == ["/var/lib/h100fleet/trainer"]
    assert o["DevicePolicy"] == ["closed"] and o["DeviceAllow"] == ["char-nvidia* rw"]
    assert o["CapabilityBoundingSet"] == [""] and o["AmbientCapabilities"] == [""]
    assert o["LimitMEMLOCK"] == ["infinity"]
    # Checked in the test containers: these break the trainer or cannot be verified on a GPU there.
    assert "MemoryDenyWriteExecute" not in o and "ProcSubset" not in o and "PrivateDevices" not in o
    assert "PrivateUsers" not in o


@pytest.mark.parametrize(
    ("case", "nproc"), [("default", 1), ("eight-gpus", 8), ("four-pinned", 4), ("cpu-no-devices", 1)]
)
def test_one_process_per_gpu_the_unit_sees(run, case, nproc):
    # The default case's node has no h100fleet_node fact (no GPU known): one plain process.
    out = rendered(run, case)
    (exec_start,) = unit_options(out / "h100fleet-trainer.service")["ExecStart"]
    python = f"{out.parent / 'stacks'}/current/bin/python"
    if nproc == 1:
        assert exec_start == f"{python} -m h100fleet.trainer --config /etc/h100fleet/trainer.yml"
    else:
        assert exec_start == (
            f"{python} -m h100fleet.trainer.launch --nproc-per-node {nproc} --config /etc/h100fleet/trainer.yml"
        )


@pytest.mark.parametrize("case", ["job-a-1", "job-a-2"])
def test_every_node_of_a_job_meets_at_the_first_host_of_its_group(run, case):
    out = rendered(run, case)
    o = unit_options(out / "h100fleet-trainer.service")
    python = f"{out.parent / 'stacks'}/current/bin/python"
    assert o["ExecStart"] == [
        f"{python} -m h100fleet.trainer.launch --nproc-per-node 8 --nnodes 2 --rdzv-endpoint job-a-1:29400 "
        "--rdzv-id job_a --config /etc/h100fleet/trainer.yml"
    ]
    env = env_file(out / "trainer.env")
    assert (env["NCCL_SOCKET_IFNAME"], env["NCCL_IB_HCA"]) == ("^docker,lo", "mlx5_0:1,mlx5_1:1")
    # Rendezvous and NCCL need the network: IP is allowed and no address is denied; InfiniBand verbs devices too.
    assert {"AF_INET", "AF_INET6"} <= set(o["RestrictAddressFamilies"][0].split())
    assert "IPAddressDeny" not in o and "PrivateNetwork" not in o
    assert o["DeviceAllow"] == ["char-nvidia* rw", "char-infiniband_verbs rw"]


def test_a_job_by_endpoint_without_a_group(run):
    out = rendered(run, "two-nodes-by-endpoint")
    (exec_start,) = unit_options(out / "h100fleet-trainer.service")["ExecStart"]
    assert exec_start.endswith(
        "-m h100fleet.trainer.launch --nproc-per-node 1 --nnodes 2 --rdzv-endpoint 10.0.0.5:29500 --rdzv-id job-7 "
        "--config /etc/h100fleet/trainer.yml"
    )
    env = env_file(out / "trainer.env")
    assert "NCCL_SOCKET_IFNAME" not in env and "NCCL_IB_HCA" not in env  # only when set


def test_second_instance_gets_its_own_names(run):
    out = rendered(run, "second-gpu")
    o = unit_options(out / "h100fleet-trainer-gpu1.service")
    assert o["User"] == ["h100fleet-trainer-gpu1"]
    assert o["ExecStart"][0].endswith("--config /etc/h100fleet/trainer-gpu1.yml")
    assert o["ReadWritePaths"] == ["/var/lib/h100fleet/trainer-gpu1"]
    env = env_file(out / "trainer-gpu1.env")
    assert env == {"H100FLEET_STACK_ID": "pinned-id", "CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "1"}
    doc = yaml.safe_load((out / "trainer-gpu1.yml").read_text())
    assert doc["train"]["output_dir"] == "/var/lib/h100fleet/trainer-gpu1"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze on this machine")
@pytest.mark.parametrize("case", ["default", "tuned", "cpu-no-devices", "job-a-1"])
def test_exposure_of_the_rendered_unit(run, case):
    out = rendered(run, case)
    unit = next(out.glob("h100fleet-trainer*.service"))
    result = subprocess.run(
        ["systemd-analyze", "security", "--no-pager", "--offline=true", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    if found is None and "offline" in result.stderr:
        pytest.skip(f"systemd-analyze cannot analyze offline here: {result.stderr.strip()}")
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, result.stdout


def test_devices_unit_loads_uvm_as_root_and_is_skipped_without_a_driver(run):
    o = unit_options(rendered(run, "default") / "h100fleet-nvidia-devices.service")
    assert o["ConditionPathExists"] == ["/proc/driver/nvidia/version"]
    assert o["ExecStart"][0] == "/usr/bin/nvidia-modprobe -c0 -u" and "User" not in o
    trainer = unit_options(rendered(run, "default") / "h100fleet-trainer.service")
    assert "h100fleet-nvidia-devices.service" in trainer["After"][0] and trainer["Wants"]


# --- the config and the environment --------------------------------------------------------------------------------


def test_config_merges_the_inventory_over_the_role_fields_and_is_valid(run):
    out = rendered(run, "tuned")
    doc = yaml.safe_load((out / "trainer.yml").read_text())
    assert doc["model"] == {"path": "/srv/h100fleet/models/Meta-Llama-3.1-8B-Instruct"}
    assert doc["train"] == {
        "backend": "auto",
        "device": "cuda",
        "output_dir": "/var/lib/h100fleet/trainer",
        "epochs": 3,
        "global_batch_size": 16,
        "learning_rate": "2e-4",
    }
    cfg = trainer_config.load(str(out / "trainer.yml"))
    assert cfg.checkpoint.every_steps == 50 and cfg.data.max_seq_length == 4096 and cfg.train.learning_rate == 2e-4
    o = unit_options(out / "h100fleet-trainer.service")
    assert o["ReadWritePaths"] == ["/var/lib/h100fleet/trainer /var/cache/h100fleet/compile"]


def test_environment_file_quotes_secrets_exactly(run):
    out = rendered(run, "tuned")
    env = env_file(out / "trainer.env")
    assert env["HF_TOKEN"] == SECRET
    assert env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    assert env["H100FLEET_STACK_ID"] == STACK  # from the current stack's marker
    assert "CUDA_VISIBLE_DEVICES" not in env  # every GPU of the node
    assert SECRET not in (out / "h100fleet-trainer.service").read_text() + (out / "trainer.yml").read_text()


def test_empty_visible_devices_leaves_it_unset(run):
    env = env_file(rendered(run, "cpu-no-devices") / "trainer.env")
    assert "CUDA_VISIBLE_DEVICES" not in env and "CUDA_DEVICE_ORDER" not in env


def test_checkpoints_may_go_to_a_cache_dir(run):
    o = unit_options(rendered(run, "checkpoints-in-a-cache-dir") / "h100fleet-trainer.service")
    assert o["ReadWritePaths"] == ["/var/lib/h100fleet/trainer /scratch/ckpt"]


# --- refusals -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_bad_settings_are_refused_by_name(run, case):
    failures, _ = run
    _, expected = REFUSED[case]
    assert failures[case] is not None, f"{case} passed the preflight"
    assert expected.replace("{case}", case) in " ".join(failures[case].split()), failures[case]

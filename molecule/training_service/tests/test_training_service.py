"""The training service on a Debian 12 node: hardened, running, and surviving stops, SIGKILL and a bad config.

The tests run in file order against one live trainer (hf backend, CPU, a tiny random Llama): each leaves it
active. A failure message carries the unit's journal and status file, so that it explains itself.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time

from h100fleet.harness import testinfra

testinfra_hosts = testinfra.hosts()

UNIT = "h100fleet-trainer.service"
USER = "h100fleet-trainer"
STATE = "/var/lib/h100fleet/trainer"
CONFIG = "/etc/h100fleet/trainer.yml"
ENV_FILE = "/etc/h100fleet/trainer.env"
STATUS = f"{STATE}/status.json"
CHECKPOINTS = f"{STATE}/checkpoints"
PY = "/opt/h100fleet/stacks/current/bin/python"
MAX_EXPOSURE = 2.0
# Where the measured stop -> resume downtime is written (docs/benchmarks.md quotes it).
TIMINGS = os.path.join(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/tmp"), "training_service-timings.json")


# --- helpers ----------------------------------------------------------------------------------------------------


sh = testinfra.sh


def explain(host, what: str) -> str:
    """A failure message: what went wrong, then the unit's state, journal and status file."""
    show = host.run(f"systemctl show {UNIT} -p ActiveState -p SubState -p Result -p ExecMainStatus -p NRestarts")
    journal = host.run(f"journalctl -u {UNIT} --no-pager -n 60 -o short-precise")
    status = host.run(f"cat {STATUS}")
    return (
        f"{what}\n--- systemctl show\n{show.stdout}--- journalctl -u {UNIT}\n{journal.stdout}\n"
        f"--- {STATUS}\n{status.stdout}"
    )


def prop(host, name: str) -> str:
    return testinfra.unit_property(host, UNIT, name)


def status(host) -> dict:
    return testinfra.json_file(host, STATUS)


def python(host, interpreter: str, script: str):
    """Run a Python script on the node (passed base64-encoded: no shell quoting)."""
    encoded = base64.b64encode(script.encode()).decode()
    return host.run(f"echo {encoded} | base64 -d | {interpreter} -")


def now(host) -> str:
    return sh(host, "date +%s.%N").strip()


def journal_since(host, since: str) -> str:
    return testinfra.journal(host, UNIT, since=since)


def wait_for(host, predicate, what: str, timeout: float = 240, interval: float = 1.0):
    """predicate() until it returns something truthy; a failure that shows the unit's state after timeout s."""
    return testinfra.wait_for(predicate, what, timeout=timeout, interval=interval, explain=lambda m: explain(host, m))


def newest_checkpoint(host) -> int:
    names = sh(host, f"ls -1 {CHECKPOINTS}").split()
    steps = [int(m.group(1)) for n in names if (m := re.fullmatch(r"step-(\d+)", n))]
    return max(steps, default=0)


def training_beyond(host, step: int, not_pid: int | None = None):
    """Wait until the trainer trains past step (written by another process than not_pid, when given: the status
    file outlives a killed process); return the status."""
    return wait_for(
        host,
        lambda: (
            (s := status(host)).get("state") == "training"
            and s.get("step", 0) > step
            and (not_pid is None or s.get("pid") != not_pid)
            and s
        ),
        f"status.json state training with step > {step}" + (f" from a process other than {not_pid}" if not_pid else ""),
    )


def rank_processes(host) -> list[str]:
    """RANK of every process of the trainer's user that torchrun started (its workers)."""
    script = f"""
import os, pwd
uid = pwd.getpwnam({json.dumps(USER)}).pw_uid
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        if os.stat(f"/proc/{{pid}}").st_uid != uid:
            continue
        env = open(f"/proc/{{pid}}/environ", "rb").read().split(b"\\0")
    except OSError:
        continue
    ranks = [e[5:].decode() for e in env if e.startswith(b"RANK=")]
    if ranks:
        print(ranks[0])
"""
    result = python(host, "/usr/bin/python3", script)
    assert result.rc == 0, result.stderr
    return sorted(result.stdout.split())


# --- what the role installed ------------------------------------------------------------------------------------


def test_user_has_no_login_and_lives_in_the_state_directory(host):
    user = host.user(USER)
    assert user.exists and user.shell == "/usr/sbin/nologin" and user.home == STATE
    assert user.uid < 1000  # a system account
    state = host.file(STATE)
    assert state.is_directory and state.user == USER and state.mode == 0o750


def test_config_is_rendered_and_valid(host):
    config = host.file(CONFIG)
    assert (config.user, config.group, config.mode) == ("root", USER, 0o640)
    assert config.content_string.startswith("#")  # ansible_managed
    assert "output_dir: /var/lib/h100fleet/trainer" in config.content_string
    assert "batch_size" not in config.content_string  # only what the inventory sets
    assert sh(host, f"{PY} -m h100fleet.trainer --check --config {CONFIG}").strip() == f"{CONFIG}: valid"


def test_environment_file_is_root_only_and_quotes_the_secret(host):
    env_file = host.file(ENV_FILE)
    assert (env_file.user, env_file.group, env_file.mode) == ("root", "root", 0o600)
    secret = host.ansible.get_variables()["training_service_secrets"]["HF_TOKEN"]
    pid = int(prop(host, "MainPID"))
    assert pid > 0, explain(host, "the trainer is not running")
    environ = dict(
        item.split("=", 1) for item in sh(host, f"cat /proc/{pid}/environ | tr '\\0' '\\n'").splitlines() if "=" in item
    )
    assert environ.get("HF_TOKEN") == secret  # $, `, ", ' and \ survived the environment file
    assert environ.get("H100FLEET_STACK_ID") == "torch2.3-unsloth2024.8-py310"
    assert environ.get("OMP_NUM_THREADS") == "1"
    assert "CUDA_VISIBLE_DEVICES" not in environ  # "" leaves it unset
    # Never on a command line, in the unit, in the config or in the journal.
    visible = sh(host, f"systemctl show {UNIT}; systemctl cat {UNIT}; cat {CONFIG}; cat /proc/{pid}/cmdline")
    visible += sh(host, f"journalctl -u {UNIT} --no-pager -o cat")
    assert "hf_t3st" not in visible


def test_unit_settings(host):
    expected = {
        "User": USER,
        "Type": "exec",
        "Restart": "on-failure",
        "RestartPreventExitStatus": "64 65 78",
        "StartLimitBurst": "5",
        "StartLimitIntervalUSec": "30min",
        "TimeoutStopUSec": "2min",
        "KillSignal": "15",
        "KillMode": "mixed",
        "LimitMEMLOCK": "infinity",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "DevicePolicy": "closed",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
        "ProtectProc": "invisible",
        "UMask": "0027",
    }
    shown = dict(
        line.split("=", 1) for line in sh(host, f"systemctl show {UNIT} -p {' -p '.join(expected)}").splitlines()
    )
    assert shown == expected
    launch = f"{PY} -m h100fleet.trainer.launch --nproc-per-node 2 --config {CONFIG}"
    assert prop(host, "ExecStart").startswith(f"{{ path={PY} ; argv[]={launch} ;")
    assert prop(host, "UnitFileState") == "enabled"
    # The unit under test is the shipped one: no drop-in relaxes anything in these containers (README).
    assert prop(host, "DropInPaths") == ""


def test_device_setup_unit_is_skipped_without_a_driver(host):
    """h100fleet-nvidia-devices.service loads nvidia-uvm as root on GPU nodes; here (no driver) its condition fails
    and the trainer, which only wants it, starts anyway."""
    shown = sh(host, "systemctl show h100fleet-nvidia-devices.service -p ConditionResult -p ActiveState -p Result")
    assert "ConditionResult=no" in shown and "Result=success" in shown, shown
    assert "h100fleet-nvidia-devices.service" in prop(host, "After")


def test_the_running_trainer_has_no_privileges_and_a_read_only_system(host):
    pid = int(prop(host, "MainPID"))
    assert pid > 0, explain(host, "the trainer is not running")
    proc = sh(host, f"cat /proc/{pid}/status")
    assert re.search(r"^Uid:\s+(\d+)", proc, re.M).group(1) == str(host.user(USER).uid)
    assert re.search(r"^CapEff:\s+0+$", proc, re.M) and re.search(r"^CapBnd:\s+0+$", proc, re.M)
    assert re.search(r"^NoNewPrivs:\s+1$", proc, re.M) and re.search(r"^Seccomp:\s+2$", proc, re.M)
    mounts = {
        f[4]: f[5].split(",") for f in (line.split() for line in sh(host, f"cat /proc/{pid}/mountinfo").splitlines())
    }
    assert "ro" in mounts["/"] and "rw" in mounts[STATE]
    assert "/tmp" in mounts and "/home" in mounts  # a private /tmp, an inaccessible /home


def test_memlock_is_unlimited_or_the_container_limit(host):
    """LimitMEMLOCK=infinity raises the hard limit, which needs CAP_SYS_RESOURCE: a container (Docker's default
    capability set) clamps it to its own limit; a node gets infinity."""
    pid = int(prop(host, "MainPID"))
    limits = sh(host, f"cat /proc/{pid}/limits /proc/1/limits")
    service, manager = re.findall(r"^Max locked memory\s+(\S+)\s+(\S+)", limits, re.M)
    assert service[1] in ("unlimited", manager[1])
    print(f"\nLimitMEMLOCK=infinity: the trainer's memlock limit is {service[1]} (the node's PID 1: {manager[1]})")


def test_exposure_score(host):
    """systemd-analyze security of the shipped unit file (no drop-ins), and of the unit as loaded."""
    sh(host, f"rm -rf /tmp/exposure && mkdir /tmp/exposure && cp /etc/systemd/system/{UNIT} /tmp/exposure/")
    shipped = sh(host, f"systemd-analyze security --no-pager --offline=true /tmp/exposure/{UNIT}")
    loaded = sh(host, f"systemd-analyze security --no-pager {UNIT}")
    score = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", shipped).group(1))
    score_loaded = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", loaded).group(1))
    print(f"\nexposure: shipped unit {score}, loaded unit {score_loaded}")
    assert score <= MAX_EXPOSURE, shipped
    assert score_loaded <= MAX_EXPOSURE, loaded


# --- what it does -----------------------------------------------------------------------------------------------


def test_service_is_active_and_training_advances(host):
    assert host.service(UNIT).is_running, explain(host, f"{UNIT} is not running")
    first = training_beyond(host, 0)
    second = training_beyond(host, first["step"])
    assert second["step"] > first["step"]
    assert (second["backend"], second["device"], second["stack_id"]) == ("hf", "cpu", "torch2.3-unsloth2024.8-py310")
    # One job of two processes: the launcher (torchrun's agent) and a trainer per rank, all in the unit's cgroup.
    assert second["world_size"] == 2, explain(host, f"status: {second}")
    assert rank_processes(host) == ["0", "1"], explain(host, f"worker ranks {rank_processes(host)}")
    assert second["total_steps"] == 1000000
    logged = sh(host, f"journalctl -u {UNIT} --no-pager -o cat")
    assert re.search(r"step=\d+/1000000 loss=", logged), explain(host, "no progress lines in the journal")


def test_stop_writes_a_checkpoint_and_start_resumes_from_it(host):
    training_beyond(host, 0)
    # Measured on the node: seconds from `systemctl stop` until the status step advances again after the start.
    script = f"""
import json, subprocess, time
def step():
    try:
        with open({json.dumps(STATUS)}) as f:
            s = json.load(f)
        return s.get("state"), s.get("step", 0)
    except (OSError, ValueError):
        return None, -1
t0 = time.monotonic()
subprocess.run(["systemctl", "stop", {json.dumps(UNIT)}], check=True)
t_stopped = time.monotonic()
state, stopped_at = step()
subprocess.run(["systemctl", "start", {json.dumps(UNIT)}], check=True)
while True:
    s, n = step()
    if s == "training" and n > stopped_at:
        break
    if time.monotonic() - t0 > 300:
        raise SystemExit("no progress after the start within 300 s")
    time.sleep(0.05)
t1 = time.monotonic()
print(json.dumps({{"stopped_state": state, "stopped_at": stopped_at, "stop_seconds": round(t_stopped - t0, 2),
                  "downtime_seconds": round(t1 - t0, 2)}}))
"""
    since = now(host)
    result = python(host, "/usr/bin/python3", script)
    assert result.rc == 0, explain(host, f"stop/start script failed: {result.stdout}{result.stderr}")
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"\nstop -> resume: {measured}")
    with open(TIMINGS, "w") as f:
        json.dump(measured, f)
    stopped_at = measured["stopped_at"]
    assert measured["stopped_state"] == "stopped" and stopped_at > 0, explain(host, f"after stop: {measured}")
    log = journal_since(host, since)
    checkpoint = f"{CHECKPOINTS}/step-{stopped_at:08d}"
    assert f"stopped at step {stopped_at}; checkpoint {checkpoint}" in log, explain(host, "no checkpoint at the stop")
    assert f"resumed from {checkpoint}: step {stopped_at}," in log, explain(host, f"did not resume from {checkpoint}")
    assert "no checkpoint: from the start" not in log
    assert prop(host, "Result") == "success"


def test_kill_9_restarts_and_resumes_from_the_last_checkpoint(host):
    training_beyond(host, 0)
    # Past a checkpoint, so that there is one to resume from.
    wait_for(host, lambda: newest_checkpoint(host) > 0, "a checkpoint")
    restarts = int(prop(host, "NRestarts"))
    pid = int(prop(host, "MainPID"))  # the launcher: systemd then kills the workers (KillMode=mixed)
    rank0 = status(host)["pid"]
    since = now(host)
    sh(host, f"kill -9 {pid}")
    wait_for(
        host,
        lambda: int(prop(host, "NRestarts")) == restarts + 1 and prop(host, "MainPID") not in ("0", str(pid)),
        "systemd to restart the trainer after SIGKILL",
        timeout=60,
    )
    last = newest_checkpoint(host)  # the newest complete checkpoint at the kill (nothing writes one in between)
    resumed = training_beyond(host, last, not_pid=rank0)
    log = journal_since(host, since)
    assert "code=killed, status=9/KILL" in log or "status=9/KILL" in log, explain(host, "no SIGKILL in the journal")
    assert f"resumed from {CHECKPOINTS}/step-{last:08d}: step {last}," in log, explain(host, f"no resume from {last}")
    assert resumed["step"] > last > 0


def test_bad_config_fails_clearly_and_is_not_restarted(host):
    before = training_beyond(host, 0)["pid"]
    sh(host, f"cp -p {CONFIG} /root/trainer.yml.good")
    # Written straight into the file: the role's template would have refused it (validate).
    edit = f"""
import yaml
with open({json.dumps(CONFIG)}) as f:
    doc = yaml.safe_load(f)
doc["train"]["batch_size"] = 0
with open({json.dumps(CONFIG)}, "w") as f:
    yaml.safe_dump(doc, f)
"""
    result = python(host, PY, edit)
    assert result.rc == 0, result.stderr
    since = now(host)
    try:
        sh(host, f"systemctl restart {UNIT}")
        wait_for(host, lambda: prop(host, "ActiveState") == "failed", f"{UNIT} to fail", timeout=120)
        time.sleep(3 * 2 + 2)  # three RestartSec periods: no automatic restart may follow
        shown = {p: prop(host, p) for p in ("ActiveState", "Result", "ExecMainStatus", "NRestarts")}
        assert shown == {"ActiveState": "failed", "Result": "exit-code", "ExecMainStatus": "78", "NRestarts": "0"}, (
            explain(host, f"after a bad config: {shown}")
        )
        log = journal_since(host, since)
        message = f'config error in {CONFIG}: train.batch_size = 0: expected a positive integer or "auto"'
        assert message in log, explain(host, "the journal does not name the field")
        assert "invalid config: exit 78 (not restarted)" in log
        assert log.count("Started h100fleet-trainer.service") == 1  # no restart loop
    finally:
        sh(host, f"cp -p /root/trainer.yml.good {CONFIG} && systemctl reset-failed {UNIT} && systemctl start {UNIT}")
    wait_for(host, lambda: prop(host, "MainPID") != "0", f"{UNIT} to start again with the good config")
    training_beyond(host, newest_checkpoint(host), not_pid=before)

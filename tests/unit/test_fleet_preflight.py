"""Settings flow one way and are checked before anything changes, through the real playbooks.

Two hosts on the control node (connection local): n1 takes its values from group_vars, n2 from host_vars. The
tests run the playbooks themselves (site.yml's preflight play, the role playbooks with their preflight tags) and
read what the roles saw from their messages: a value that reaches a role is the value the role names when it
refuses it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import GOOD_FACTS, KERNEL_HEADERS, REPO, ansible_env, flat


def inventory(tmp_path: Path, group: dict, host_n2: dict | None = None) -> Path:
    root = tmp_path / "inventory"
    (root / "group_vars").mkdir(parents=True)
    (root / "host_vars").mkdir()
    (root / "hosts.yml").write_text(yaml.safe_dump({"all": {"children": {"h100s": {"hosts": {"n1": {}, "n2": {}}}}}}))
    connection = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    (root / "group_vars" / "h100s.yml").write_text(yaml.safe_dump({**connection, **group}))
    if host_n2:
        (root / "host_vars" / "n2.yml").write_text(yaml.safe_dump(host_n2))
    return root


def play(inv: Path, playbook: str, *args: str, report_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    extra = ["-e", json.dumps({"fleet_preflight_report_dir": str(report_dir)})] if report_dir else []
    extra += ["-e", json.dumps({"__nvidia_driver_modules_dir": KERNEL_HEADERS})]
    argv = ["ansible-playbook", "-i", str(inv), str(REPO / playbook), *extra, *args]
    return subprocess.run(argv, cwd=REPO, env=ansible_env(), capture_output=True, text=True, check=False)


# Every role variable a playbook used to set under `roles: - role: ... vars:` (which outranked the inventory), with
# the playbook and tag that run the role's preflight, and values the role refuses by name: the value it names is the
# value that reached it. Variables whose checks stop at the same task share a run (all their problems are named).
REACH = {
    "nvidia_driver": (
        "playbooks/nvidia.yml",
        {
            "nvidia_driver_version": "5x0-{}",
            "nvidia_driver_cuda_version": "12-{}",
            "nvidia_driver_nvidia_repo_base_url": "mirror-{}",
        },
    ),
    "cuda_toolkit": (
        "playbooks/cuda_toolkit.yml",
        {"cuda_toolkit_version": "12-{}", "cuda_toolkit_nvidia_repo_base_url": "mirror-{}"},
    ),
    "gpu_validate": (
        "playbooks/validate.yml",
        {"gpu_validate_driver": "5x0-{}"},
    ),
    # ansible's own argument validation refuses a non-boolean first, naming the value too.
    "gpu_validate_manage_venv": ("playbooks/validate.yml", {"gpu_validate_manage_venv": "maybe-{}"}),
    "gpu_validate_python": ("playbooks/validate.yml", {"gpu_validate_python": "relative-{}/python"}),
}


@pytest.mark.parametrize("case", list(REACH))
def test_group_vars_and_host_vars_reach_the_role_and_extra_vars_win(tmp_path, case):
    playbook, values = REACH[case]
    tag = playbook.removeprefix("playbooks/").removesuffix(".yml").replace("nvidia", "nvidia_driver")
    tag = {"validate": "gpu_validate"}.get(tag, tag) + "_preflight"
    by = {
        source: {name: value.format(source) for name, value in values.items()} for source in ("group", "host", "extra")
    }
    inv = inventory(tmp_path, by["group"], by["host"])
    out = flat(play(inv, playbook, "--tags", tag))
    for name in values:
        assert f"'{by['group'][name]}'" in out, (name, out)  # n1, from group_vars
        assert f"'{by['host'][name]}'" in out, (name, out)  # n2, from host_vars

    out = flat(play(inv, playbook, "--tags", tag, "-e", json.dumps(by["extra"])))
    for name in values:
        assert out.count(f"'{by['extra'][name]}'") >= 2, (name, out)  # both hosts
        assert by["group"][name] not in out and by["host"][name] not in out, (name, out)


def test_preflight_reports_every_problem_of_every_host_before_anything_changes(tmp_path):
    inv = inventory(
        tmp_path,
        {"h100fleet_driver_branch": 550, "node_baseline_ntp_servers": "pool.ntp.org", "python_stack_idd": "x"},
        {"training_service_cuda_visible_devices": "0,0", "gpu_validate_min_gemm_tflops": "lots"},
    )
    result = play(inv, "site.yml", report_dir=tmp_path / "report")
    out = result.stdout
    assert result.returncode != 0, out
    # Nothing past the preflight ran: no role play started.
    assert "PLAY [Node baseline]" not in out, out
    assert "n2                         : ok=" in out and "changed=0" in out.split("n2 ")[-1].split("\n")[0], out
    doc = json.loads((tmp_path / "report" / "preflight.json").read_text())
    messages = {(p["host"], p["role"], p["message"]) for p in doc["problems"]}
    for host in ("n1", "n2"):
        assert (
            host,
            "fleet pins",
            "h100fleet_driver_branch is 550 (a number); expected a string (quote it in YAML).",
        ) in messages
        assert (
            host,
            "node_baseline",
            "node_baseline_ntp_servers is 'pool.ntp.org'; expected a list (a YAML sequence, e.g. [a, b]).",
        ) in messages
        assert (
            host,
            "python_stack",
            "python_stack_idd is not a setting of python_stack; did you mean python_stack_id?",
        ) in messages
    assert (
        "n2",
        "training_service",
        "training_service_cuda_visible_devices is '0,0'; expected each GPU once; 0 is listed more than once.",
    ) in messages
    assert ("n2", "gpu_validate", "gpu_validate_min_gemm_tflops is 'lots'; expected a number.") in messages
    # The pin's problem is named once per host, not again under each role that takes its default from it.
    assert len([m for m in messages if m[0] == "n1" and "h100fleet_driver_branch" in m[2]]) == 1
    assert "Preflight refused 2 of 2 hosts" in flat(result)


def test_a_role_preflight_refusal_is_reported_with_the_settings_of_other_roles(tmp_path):
    # A driver branch too old for CUDA 12.4 is the nvidia_driver preflight's own check (not a shape).
    inv = inventory(tmp_path, {"h100fleet_driver_branch": "535"}, {"cuda_toolkit_verify_arch": "hopper"})
    result = play(inv, "playbooks/preflight.yml", report_dir=tmp_path / "report")
    assert result.returncode != 0
    doc = json.loads((tmp_path / "report" / "preflight.json").read_text())
    roles = {(p["host"], p["role"]) for p in doc["problems"]}
    assert {("n1", "nvidia_driver"), ("n2", "nvidia_driver"), ("n2", "cuda_toolkit")} <= roles, doc
    assert any("cannot run CUDA 12.4" in p["message"] for p in doc["problems"]), doc


def test_a_trainer_config_the_trainer_refuses_is_found_on_the_control_node(tmp_path):
    inv = inventory(tmp_path, {"training_service_config": {"train": {"learning_rate": "fast"}}})
    result = play(inv, "playbooks/preflight.yml", report_dir=tmp_path / "report")
    assert result.returncode != 0
    doc = json.loads((tmp_path / "report" / "preflight.json").read_text())
    trainer = [p["message"] for p in doc["problems"] if p["role"] == "training_service"]
    assert len(trainer) == 2 and all("train.learning_rate" in m for m in trainer), doc


def test_a_good_inventory_passes(tmp_path):
    inv = inventory(tmp_path, {})
    # The control node stands in for a supported node (it may run without systemd, in a container).
    facts = {**GOOD_FACTS, "python": {"version": {"major": 3, "minor": 11}}}
    result = play(
        inv, "playbooks/preflight.yml", "-e", json.dumps({"ansible_facts": facts}), report_dir=tmp_path / "report"
    )
    assert result.returncode == 0, result.stdout
    assert "Preflight: 2 of 2 hosts ok" in result.stdout
    doc = json.loads((tmp_path / "report" / "preflight.json").read_text())
    assert doc["problems"] == []


def test_every_problem_of_each_role_preflight_is_reported_with_host_and_variable(tmp_path):
    # n2 has two problems of nvidia_driver's own checks and two of cuda_toolkit's (none of them a shape problem).
    inv = inventory(
        tmp_path,
        {},
        {
            "h100fleet_driver_branch": "535",
            "nvidia_driver_signing_key": "/var/lib/shim-signed/mok/MOK.priv",
            "cuda_toolkit_verify_arch": "hopper",
            "cuda_toolkit_debian_version": "11.8.89~11.8.0-5",
            "gpu_validate_timeout": 0,
            "gpu_validate_report_dir": "reports",
        },
    )
    facts = {**GOOD_FACTS, "python": {"version": {"major": 3, "minor": 11}}}
    node = {"h100fleet_node": {"secure_boot": "enabled", "gpu_count": 8, "nvswitch_count": 0}}
    extra = json.dumps({"ansible_facts": facts, "ansible_local": node})
    result = play(inv, "site.yml", "-e", extra, report_dir=tmp_path / "report")
    out = result.stdout
    assert result.returncode != 0, out
    assert "PLAY [Node baseline]" not in out, out
    # Nothing changed on a host: the only change is the report's directory on the control node (preflight.json
    # is rewritten every run and reports no change).
    changed = [line for line in out.splitlines() if line.startswith("changed:")]
    assert changed == ["changed: [n1 -> localhost]"], out
    doc = json.loads((tmp_path / "report" / "preflight.json").read_text())
    # Secure Boot without a signing key and certificate: both hosts; n1 has nothing else.
    assert [p["message"] for p in doc["hosts"]["n1"]["problems"]] == [
        "Secure Boot is enabled on n1 and no module-signing key is configured: the kernel would refuse the DKMS-built "
        "NVIDIA module. Set nvidia_driver_signing_key and nvidia_driver_signing_cert (an enrolled MOK) or disable "
        "Secure Boot."
    ]
    n2 = [(p["role"], p["message"]) for p in doc["problems"] if p["host"] == "n2"]
    expected = {
        "nvidia_driver": ["nvidia_driver_version 535 cannot run CUDA 12.4", "Secure Boot is enabled on n2"],
        "cuda_toolkit": ["cuda_toolkit_debian_version is '11.8.89~11.8.0-5'", "cuda_toolkit_verify_arch is 'hopper'"],
        "gpu_validate": ["gpu_validate_timeout is 0; expected a number greater than 0", "gpu_validate_report_dir is"],
    }
    for role, starts in expected.items():
        for start in starts:
            assert any(r == role and start in m for r, m in n2), (role, start, n2)
    text = flat(result)
    assert "- n2 [cuda_toolkit]: cuda_toolkit_verify_arch is 'hopper'; expected sm_XY" in text
    assert "- n2 [gpu_validate]: gpu_validate_report_dir is 'reports'; expected an absolute path" in text

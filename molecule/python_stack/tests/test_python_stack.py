"""What python_stack leaves on a Debian 12 node: the default stack, exactly as locked, and working on CPU."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from h100fleet.harness import testinfra

testinfra_hosts = testinfra.hosts()

STACK = "torch2.3-unsloth2024.8-py310"
LOCK = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "files" / "stacks" / STACK / "lock-py3.11.txt"
LOCK_HASH = hashlib.sha256(LOCK.read_bytes()).hexdigest()
ROOT = "/opt/h100fleet/stacks"
VENV = f"{ROOT}/{STACK}-py3.11-{LOCK_HASH[:12]}"
PY = f"{ROOT}/current/bin/python"
IMPORTS = ["torch", "transformers", "peft", "accelerate", "bitsandbytes", "datasets", "xformers"]

TRAIN = """
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

torch.manual_seed(0)
config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                       target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM"))
ids = torch.randint(0, 128, (2, 32))
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
losses = []
for _ in range(5):
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_" in n]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    optimizer.step()
    optimizer.zero_grad()
    losses.append(loss.item())
print(losses)
assert losses[-1] < losses[0], losses
"""


def run_ok(host, command):
    result = host.run(command)
    assert result.rc == 0, f"{command}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result.stdout


def test_current_points_at_the_locked_venv(host):
    current = host.file(f"{ROOT}/current")
    assert current.is_symlink and current.linked_to == VENV


def test_marker_records_the_lock(host):
    marker = json.loads(host.file(f"{VENV}/h100fleet-stack.json").content_string)
    assert marker["id"] == STACK and marker["lock_hash"] == LOCK_HASH
    assert marker["python"].startswith("3.11.")
    assert marker["flash_attn"].startswith("not installed")  # GitHub (the wheel's URL) is unreachable here
    assert all(marker["imports"][m]["ok"] for m in IMPORTS)


def test_installed_versions_equal_the_lock(host):
    report = json.loads(run_ok(host, f"{PY} -m h100fleet.node.verify --lock {ROOT}/current/h100fleet-lock.txt"))
    assert report["ok"] and report["pins"] > 100
    assert report["missing"] == [] and report["mismatched"] == {} and report["extra"] == []


@pytest.mark.parametrize(
    ("module", "version"),
    [
        ("torch", "2.3.0"),
        ("transformers", "4.43.3"),
        ("peft", "0.11.1"),
        ("accelerate", "0.30.1"),
        ("bitsandbytes", "0.43.1"),
        ("datasets", "2.19.1"),
        ("xformers", "0.0.26.post1"),
        ("trl", "0.8.6"),
    ],
)
def test_module_imports_at_the_locked_version(host, module, version):
    out = run_ok(host, f"{PY} -c 'import {module}; print({module}.__version__)'")
    assert out.strip().split("+")[0] == version


def test_uv_pip_check_is_clean(host):
    result = host.run(f"/opt/h100fleet/bin/uv-0.13.9 pip check --python {PY}")
    assert result.rc == 0, result.stdout + result.stderr
    assert "All installed packages are compatible" in result.stdout + result.stderr


def test_lora_forward_backward_on_cpu(host):
    out = run_ok(host, f"{PY} - <<'EOF'\n{TRAIN}\nEOF")
    losses = json.loads(out.strip().splitlines()[-1])
    assert len(losses) == 5 and losses[-1] < losses[0]


def test_fact_reports_the_active_stack(host):
    fact = json.loads(run_ok(host, "/etc/ansible/facts.d/h100fleet_stack.fact"))
    assert fact["id"] == STACK and fact["lock_hash"] == LOCK_HASH
    assert fact["active"]["path"] == VENV and fact["previous"] is None
    # The side effect pre-staged the light stack from a wheelhouse; the tampered one left nothing.
    assert sorted(s["id"] for s in fact["installed"]) == ["light", STACK]
    assert not any(s.get("incomplete") for s in fact["installed"])


def test_prestaged_wheelhouse_stack_is_complete_and_verified(host):
    light_lock = LOCK.parents[3] / "tests" / "fixtures" / "stacks" / "light" / "lock-py3.11.txt"
    venv = f"{ROOT}/light-py3.11-{hashlib.sha256(light_lock.read_bytes()).hexdigest()[:12]}"
    marker = json.loads(host.file(f"{venv}/h100fleet-stack.json").content_string)
    assert marker["id"] == "light" and marker["packages"] == 3
    assert all(marker["imports"][m]["ok"] for m in ("yaml", "six", "packaging"))
    assert host.file(f"{ROOT}/.wheelhouse/six-1.16.0-py2.py3-none-any.whl").exists


def test_h100fleet_package_is_in_the_venv(host):
    run_ok(host, f"{PY} -c 'import h100fleet.probes.run, h100fleet.node.verify'")
    site = f"{VENV}/lib/python3.11/site-packages/h100fleet"
    for control_or_harness in ("harness", "testfleet", "fleet", "stack", "cli.py"):  # the node side only
        assert not host.file(f"{site}/{control_or_harness}").exists, control_or_harness

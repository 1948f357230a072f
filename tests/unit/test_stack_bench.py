"""The venv build benchmark's scripts: the specified install steps and the uv runs, as the containers get them."""

from __future__ import annotations

from pathlib import Path

from h100fleet.harness import venv_bench

DEFAULT_IN = (
    Path(__file__).resolve().parents[2] / "files/stacks/torch2.3-unsloth2024.8-py310/requirements.in"
).read_text()


def test_specified_steps_install_the_torch_triplet_first_then_one_package_per_step():
    steps = venv_bench.specified_steps(DEFAULT_IN)
    assert steps[0] == ["torch==2.3.0", "torchvision==0.18.0", "torchaudio==2.3.0"]
    assert ["unsloth[colab-new]==2024.8"] in steps and ["xformers==0.0.26.post1"] in steps
    assert all(len(step) == 1 for step in steps[1:])
    # nvidia-ml-py is unpinned in requirements.in: it is not a step (the lock pins it; pip resolves it as a dependency)
    assert len(steps) == 1 + 18


def test_pip_script_runs_each_step_against_the_wheelhouse_only():
    script = venv_bench.pip_script([["a==1", "b==2"], ["c==3"]], venv_bench.Paths(wheelhouse="/wh"))
    lines = script.splitlines()
    assert "/usr/bin/python3 -m venv /opt/specified" in lines
    pip = "/opt/specified/bin/pip install --quiet --disable-pip-version-check --no-index --find-links /wh"
    assert f"{pip} a==1 b==2" in lines and f"{pip} c==3" in lines
    assert lines[-1] == 'echo "RESULT pip-sequential $(echo "$t1 - $t0" | bc)"'


def test_uv_script_syncs_with_hashes_cold_then_warm():
    script = venv_bench.uv_script(venv_bench.Paths(wheelhouse="/wh", lock="/l.txt"))
    syncs = [ln for ln in script.splitlines() if " pip sync " in ln]
    assert len(syncs) == 2
    assert all("--require-hashes --no-index --find-links /wh" in s and s.endswith("/l.txt") for s in syncs)
    assert "RESULT uv-cold-cache" in script and "RESULT uv-warm-cache" in script
    assert script.count("rm -rf /opt/stack") == 2


def test_parse_results():
    out = "noise\nRESULT pip-sequential 301.5\nRESULT uv-cold-cache 40.25\n"
    assert venv_bench.parse_results(out) == {"pip-sequential": 301.5, "uv-cold-cache": 40.25}

"""Stack manifests, lock files, bump summaries, node-side verification and the `h100fleet stack` commands."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from h100fleet import cli
from h100fleet.node import verify
from h100fleet.node.lockfile import lock_hash, parse_pins, requirement_names
from h100fleet.stack import diff, lock, manifest

ROOT = Path(__file__).resolve().parents[2]
STACKS = ROOT / "files" / "stacks"
DEFAULT = "torch2.3-unsloth2024.8-py310"
CURRENT = "torch2.11-unsloth2026.10-py312"
ON_550 = "torch2.6-unsloth2026.10-py311"
ON_313 = "torch2.6-transformers5.17-py313"
RECORDED = str(ROOT / "tests" / "fixtures" / "index")


def write_stack(root: Path, stack_id: str, manifest_text: str, requirements: str = "torch==2.3.0\n") -> Path:
    d = root / stack_id
    d.mkdir(parents=True)
    (d / "manifest.yml").write_text(manifest_text)
    (d / "requirements.in").write_text(requirements)
    return d


GOOD = 'id: s1\npython: ["3.10"]\nmin_driver: "550.54.15"\ncuda_runtime: "12.1"\nexclude_newer: "2024-08-31"\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD.replace("id: s1", "id: other"), "field 'id' is 'other': expected lower-case letters"),
        (GOOD.replace('python: ["3.10"]', "python: 3.10"), "field 'python' is 3.1: expected a list"),
        (GOOD.replace('python: ["3.10"]', 'python: ["3"]'), "field 'python' is ['3']: expected a non-empty list"),
        (GOOD.replace('min_driver: "550.54.15"', 'min_driver: "55"'), "field 'min_driver' is '55': expected a driver"),
        (GOOD.replace('min_driver: "550.54.15"\n', ""), "field 'min_driver' is missing"),
        (GOOD.replace('cuda_runtime: "12.1"', 'cuda_runtime: "cu121"'), "field 'cuda_runtime' is 'cu121'"),
        (GOOD.replace('"2024-08-31"', '"last summer"'), "field 'exclude_newer' is 'last summer': expected a date"),
        (
            GOOD + "deviations:\n  - package: torch\n    specified: a\n    shipped: b\n",
            "field 'deviations[0]' lacks reason",
        ),
        (GOOD + "deviations:\n  - package: torch\n    shipped: b\n    reason: c\n", "lacks specified: every deviation"),
        (GOOD + "flash_attn: [2.5.8]\n", "field 'flash_attn' is ['2.5.8']: expected a mapping"),
    ],
)
def test_manifest_errors_name_the_field(tmp_path, text, message):
    d = write_stack(tmp_path, "s1", text)
    with pytest.raises(manifest.ManifestError) as err:
        manifest.load(d)
    assert message in str(err.value)
    assert str(d / "manifest.yml") in str(err.value)


def test_manifest_needs_requirements(tmp_path):
    d = write_stack(tmp_path, "s1", GOOD)
    (d / "requirements.in").unlink()
    with pytest.raises(manifest.ManifestError, match=r"requirements.in: no such file"):
        manifest.load(d)


def test_discover_finds_the_shipped_stacks():
    stacks = manifest.discover(STACKS)
    assert set(stacks) == {DEFAULT, CURRENT, ON_550, ON_313}
    assert stacks[ON_550].python == ["3.11", "3.12"] and stacks[ON_550].cuda_runtime == "12.4"
    assert stacks[DEFAULT].python == ["3.10", "3.11"] and stacks[DEFAULT].min_driver == "550.54.15"
    assert stacks[CURRENT].min_driver == "580.65.06" and stacks[CURRENT].cuda_runtime == "13.0"
    assert stacks[DEFAULT].flash_attn.wheels["3.10"].startswith("flash_attn-2.5.8+cu122torch2.3cxx11abiFALSE-cp310")


def test_parse_pins_reads_continuations_extras_and_hashes():
    text = (
        "# header\n--index-url https://example\nunsloth[colab-new]==2024.8 \\\n"
        "    --hash=sha256:" + "a" * 64 + " \\\n    --hash=sha256:" + "b" * 64 + "\n    # via -r requirements.in\n"
        "Torch_Vision==0.18.0 ; python_version >= '3.8'\nrequests>=2\n"
    )
    pins = parse_pins(text)
    assert set(pins) == {"unsloth", "torch-vision"}
    assert pins["unsloth"].extras == ("colab-new",) and pins["unsloth"].hashes == ("a" * 64, "b" * 64)
    assert str(pins["unsloth"]) == "unsloth[colab-new]==2024.8"
    assert pins["torch-vision"].version == "0.18.0" and not pins["torch-vision"].hashes
    assert requirement_names(text) == ["unsloth", "torch-vision", "requests"]


def test_lock_hash_is_the_sha256_of_the_file(tmp_path):
    f = tmp_path / "lock.txt"
    f.write_bytes(b"x==1\n")
    assert lock_hash(f) == hashlib.sha256(b"x==1\n").hexdigest()
    f.write_bytes(b"x==2\n")
    assert lock_hash(f) == hashlib.sha256(b"x==2\n").hexdigest()


def test_compile_argv_targets_the_platform_python_and_cutoff():
    stack = manifest.load(STACKS / DEFAULT)
    argv = lock.compile_argv(stack, "3.11", Path("/tmp/out.txt"), "uv")
    assert argv[:4] == ["uv", "pip", "compile", str(stack.requirements_path)]
    assert argv[argv.index("--python-version") + 1] == "3.11"
    assert argv[argv.index("--python-platform") + 1] == "x86_64-manylinux_2_28"
    assert argv[argv.index("--exclude-newer") + 1] == "2024-08-31"
    assert "--generate-hashes" in argv and argv[-2:] == ["-o", "/tmp/out.txt"]
    assert "--generate-hashes" not in lock.compile_argv(stack, "3.11", None, "uv", hashes=False)


def test_lock_and_resolve_with_the_real_resolver(tmp_path):
    """uv against PyPI: a tiny stack locks with hashes; an impossible pin is explained, naming the package."""
    try:
        uv = lock.find_uv()
    except FileNotFoundError:
        pytest.skip("uv is not installed (scripts/bootstrap-host pins it)")
    d = write_stack(tmp_path, "s1", GOOD, "six==1.16.0\n")
    stack = manifest.load(d)
    written = lock.lock(stack, uv)
    pins = parse_pins(written["3.10"].read_text())
    assert pins["six"].version == "1.16.0" and pins["six"].hashes
    assert written["3.10"].read_text().startswith("# Lock of stack s1 for Python 3.10")
    assert lock.resolve_errors(stack, uv) == {"3.10": None}
    (d / "requirements.in").write_text("unsloth==2024.7\n")
    error = lock.resolve_errors(manifest.load(d), uv)["3.10"]
    assert "unsloth" in error and "2024.7" in error


def test_diff_of_the_shipped_stacks_is_a_driver_bump():
    old, new = manifest.load(STACKS / DEFAULT), manifest.load(STACKS / CURRENT)
    result = diff.diff(old, new)
    assert result.python == "3.11"
    assert result.changed["torch"] == ("2.3.0", "2.11.0")
    assert result.added["unsloth-zoo"] == "2026.10.9"
    assert "scipy" in result.removed
    assert result.driver_bump and result.cuda_change
    text = result.render()
    assert "- minimum driver: 550.54.15 -> 580.65.06" in text
    assert "reboot needed: YES" in text
    assert "| torch | 2.3.0 | 2.11.0 | minor upgrade |" in text
    assert "| transformers | 4.43.3 | 5.17.0 | major upgrade |" in text
    back = diff.diff(new, old)
    assert not back.driver_bump and "| torch | 2.11.0 | 2.3.0 | minor DOWNGRADE |" in back.render()


def test_diff_to_current_libraries_on_the_550_driver_needs_no_reboot():
    result = diff.diff(manifest.load(STACKS / DEFAULT), manifest.load(STACKS / ON_550))
    assert result.python == "3.11"
    assert result.changed["torch"] == ("2.3.0", "2.6.0") and result.changed["unsloth"] == ("2024.8", "2026.10.9")
    assert not result.driver_bump and not result.driver_change and result.cuda_change
    text = result.render()
    assert "- minimum driver: 550.54.15 (unchanged)" in text and "- CUDA runtime of the wheels: 12.1 -> 12.4" in text
    assert "reboot needed: no" in text


def test_diff_within_a_driver_branch_needs_no_reboot(tmp_path):
    src = STACKS / DEFAULT
    bumped = tmp_path / "default-bumped"
    shutil.copytree(src, bumped)
    (bumped / "manifest.yml").write_text((src / "manifest.yml").read_text().replace(DEFAULT, "default-bumped"))
    lock_file = bumped / "lock-py3.10.txt"
    lock_file.write_text(lock_file.read_text().replace("peft==0.11.1 ", "peft==0.12.0 "))
    result = diff.diff(manifest.load(src), manifest.load(bumped), "3.10")
    assert result.changed == {"peft": ("0.11.1", "0.12.0")} and not result.added and not result.removed
    assert not result.driver_bump
    assert "reboot needed: no" in result.render()
    assert result.to_json()["reboot_needed"] is False


def test_diff_without_a_common_python_says_so():
    only_312 = dataclasses.replace(manifest.load(STACKS / CURRENT), python=["3.12"])
    with pytest.raises(ValueError, match="share no Python version"):
        diff.diff(manifest.load(STACKS / DEFAULT), only_312)


def test_verify_compare_reports_missing_mismatched_local_and_extra():
    lock_text = "torch==2.11.0 \\\n    --hash=sha256:" + "a" * 64 + "\npeft==0.21.2\nnumpy==2.4.6\n"
    have = {"torch": "2.11.0+cu130", "peft": "0.21.0", "h100fleet": "0.1.0"}
    strict = verify.compare(lock_text, have)
    assert strict["missing"] == ["numpy==2.4.6"]
    assert strict["mismatched"] == {
        "peft": {"lock": "0.21.2", "installed": "0.21.0"},
        "torch": {"lock": "2.11.0", "installed": "2.11.0+cu130"},
    }
    relaxed = verify.compare(lock_text, have, ignore_local=True)
    assert relaxed["local_builds"] == {"torch": "2.11.0+cu130"} and "torch" not in relaxed["mismatched"]
    assert relaxed["extra"] == ["h100fleet"]


def test_verify_main_on_this_interpreter(tmp_path, capsys):
    lock_file = tmp_path / "lock.txt"
    lock_file.write_text(f"pyyaml=={yaml.__version__}\n")
    assert verify.main(["--lock", str(lock_file), "--import", "yaml", "--import", "no_such_module_h100"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["missing"] == [] and report["mismatched"] == {}
    assert report["imports"]["yaml"]["ok"] and not report["imports"]["no_such_module_h100"]["ok"]
    assert verify.main(["--lock", str(lock_file), "--import", "yaml"]) == 0


def test_cli_check_exit_codes(capsys):
    as_specified = str(ROOT / "tests" / "fixtures" / "stacks" / "as-specified")
    assert cli.main(["stack", "check", as_specified, "--offline", "--recorded", RECORDED]) == 1
    out = capsys.readouterr().out
    assert "as-specified: FAILS (5 errors, 0 warnings; Python 3.10; resolution not run (--offline))" in out
    assert cli.main(["stack", "check", DEFAULT, "--offline", "--recorded", RECORDED]) == 0
    assert f"{DEFAULT}: passes (0 errors, 0 warnings" in capsys.readouterr().out
    assert cli.main(["stack", "check", CURRENT, "--offline", "--recorded", RECORDED, "--json"]) == 0
    assert [f["rule"] for f in json.loads(capsys.readouterr().out)] == ["xformers-torch"]


def test_cli_unknown_stack_lists_the_known_ones(capsys):
    assert cli.main(["stack", "check", "no-such-stack", "--offline", "--recorded", RECORDED]) == 1
    err = capsys.readouterr().err
    assert "no stack 'no-such-stack'" in err and DEFAULT in err and CURRENT in err


def test_cli_list_and_diff(capsys):
    assert cli.main(["stack", "list"]) == 0
    out = capsys.readouterr().out
    default_hash = lock_hash(STACKS / DEFAULT / "lock-py3.10.txt")[:12]
    assert f"{DEFAULT}: Python 3.10, 3.11; driver >= 550.54.15; CUDA 12.1; py3.10:{default_hash}" in out
    assert cli.main(["stack", "diff", DEFAULT, CURRENT, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["reboot_needed"] is True

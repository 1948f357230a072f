"""The stack rules, run on the shipped stacks, on the specification's stack as written, and on broken copies of them.

Index answers come from tests/fixtures/index, recorded from PyPI by `h100fleet stack check --record`.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from h100fleet.stack import manifest, rules
from h100fleet.stack.index import RecordedIndex, Release
from h100fleet.stack.rules import ERROR, WARN

ROOT = Path(__file__).resolve().parents[2]
STACKS = ROOT / "files" / "stacks"
AS_SPECIFIED = ROOT / "tests" / "fixtures" / "stacks" / "as-specified"
DEFAULT = "torch2.3-unsloth2024.8-py310"
CURRENT = "torch2.11-unsloth2026.10-py312"
ON_550 = "torch2.6-unsloth2026.10-py311"
ON_313 = "torch2.6-transformers5.17-py313"
INDEX = RecordedIndex(ROOT / "tests" / "fixtures" / "index")


def check(stack_dir: Path, resolve_errors=None) -> list[rules.Finding]:
    return rules.check(manifest.load(stack_dir), INDEX, resolve_errors)


def errors(findings, rule=None):
    return [f for f in findings if f.severity == ERROR and (rule is None or f.rule == rule)]


@pytest.fixture
def copy(tmp_path):
    """A writable copy of a shipped stack (same directory name, so the id still matches)."""

    def make(stack_id: str) -> Path:
        target = tmp_path / stack_id
        shutil.copytree(STACKS / stack_id, target)
        return target

    return make


def edit(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, count))


def relock(stack_dir: Path, package: str, version: str) -> None:
    """Change one pin in every lock of a stack copy (hashes kept: only the rules look at it)."""
    for lock in stack_dir.glob("lock-py*.txt"):
        text, n = re.subn(rf"^{re.escape(package)}==[^ ]+ ", f"{package}=={version} ", lock.read_text(), flags=re.M)
        assert n == 1, f"{package} not pinned in {lock}"
        lock.write_text(text)


# --- the specification's stack as written ------------------------------------------------------------------------


def test_as_specified_fails_with_the_known_findings():
    findings = check(AS_SPECIFIED)
    by_rule = {f.rule for f in errors(findings)}
    assert by_rule == {"date-cutoff", "release-exists", "flash-attn", "unsloth-guards"}
    text = "\n".join(str(f) for f in findings)
    assert "unsloth==2024.7 is not on the index: its releases run 2024.8" in text
    assert "pin a release that exists, e.g. unsloth==2024.8" in text
    assert "unsloth 2024.7 imports xformers unconditionally" in text
    assert "the only xformers built for torch 2.3.1 is 0.0.27, which unsloth 2024.7 rejects" in text
    assert "xformers==0.0.26.post1" in text  # the fix names the working set
    assert "needs trl>=0.7.9,<0.9.0" in text and "no trl is pinned" in text
    assert "flash-attn==2.5.8 is an sdist only on the index" in text
    assert "flash_attn-2.5.8+cu122torch2.3cxx11abiFALSE-cp310-cp310-linux_x86_64.whl" in text


def test_as_specified_resolver_error_names_unsloth():
    uv_error = (
        "  x No solution found when resolving dependencies:\n  `-> Because there is no version of "
        "unsloth[colab-new]==2024.7 and you require unsloth[colab-new]==2024.7, we can conclude that your "
        "requirements are unsatisfiable."
    )
    findings = check(AS_SPECIFIED, {"3.10": uv_error})
    resolves = errors(findings, "resolves")
    assert len(resolves) == 1
    assert "unsloth[colab-new]==2024.7" in resolves[0].message
    assert resolves[0].fix == "change the pins the resolver names (unsloth)"
    assert not errors(findings, "lock"), "a stack that does not resolve is not also told to lock"


# --- the shipped stacks ------------------------------------------------------------------------------------------


def test_default_stack_passes():
    assert check(STACKS / DEFAULT) == []


def test_current_stack_passes_with_the_xformers_warning_only():
    findings = check(STACKS / CURRENT)
    assert [(f.rule, f.severity) for f in findings] == [("xformers-torch", WARN)]
    assert "xformers==0.0.35 was built for torch 2.10.0 but the stack pins torch 2.11.0" in findings[0].message


def test_current_libraries_on_the_550_driver_are_refused_for_their_torchao():
    # Measured on an H200: torchao 0.18.0 on torch 2.6.0 breaks every model import (transformers and peft import it).
    findings = check(STACKS / ON_550)
    assert [(f.rule, f.severity) for f in findings] == [("torchao-torch", ERROR)]
    assert "torchao==0.18.0 needs torch >= 2.9.0 but the stack pins torch 2.6.0" in findings[0].message


@pytest.mark.parametrize(
    ("torchao", "torch", "refused"),
    [
        ("0.13.0", "2.6.0", False),
        ("0.14.1", "2.6.0", True),
        ("0.17.0", "2.9.0", False),
        ("0.19.0", "2.8.0", True),
        ("0.11.0", "2.3.0", False),
    ],
)
def test_torchao_needs_the_torch_its_release_supports(copy, torchao, torch, refused):
    stack = copy(ON_550)
    for lock in stack.glob("lock-py*.txt"):
        text = re.sub(r"^torchao==\S+", f"torchao=={torchao}", lock.read_text(), flags=re.M)
        lock.write_text(re.sub(r"^torch==\S+", f"torch=={torch}", text, flags=re.M))
    findings = rules.check(manifest.load(stack), INDEX, rules=["torchao-torch"])
    assert bool(errors(findings, "torchao-torch")) is refused


def test_hf_stack_for_python_3_13_on_the_550_driver_passes():
    assert check(STACKS / ON_313) == []


def test_hf_stack_for_python_3_13_refuses_xformers_without_a_cp313_wheel(copy):
    # The reason this stack leaves Unsloth out: its xformers for torch 2.6 has no wheel for Python 3.13.
    stack = copy(ON_313)
    for lock in stack.glob("lock-py*.txt"):
        lock.write_text(lock.read_text() + "xformers==0.0.29.post3 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    assert any("xformers==0.0.29.post3" in f.message for f in errors(check(stack), "wheels"))


@pytest.mark.parametrize("stack_id", [DEFAULT, CURRENT, ON_550, ON_313])
def test_shipped_stack_is_complete(stack_id):
    stack = manifest.load(STACKS / stack_id)
    assert stack.exclude_newer, "shipped stacks resolve with a date cutoff"
    assert stack.deviations, "every shipped stack documents how it differs from the specification"
    assert stack.imports
    for python in stack.python:
        pins = stack.lock_pins(python)
        assert pins, f"no lock for Python {python}"
        assert all(p.hashes for p in pins.values()), "every pin carries hashes (--require-hashes)"
        for want in stack.input_pins().values():
            assert pins[want.key].version == want.version


# --- broken copies: each rule fails, naming both packages and the fix --------------------------------------------


def test_torch_bumped_alone_breaks_the_triplet_and_xformers(copy):
    stack = copy(DEFAULT)
    relock(stack, "torch", "2.3.1")
    findings = check(stack)
    triplet = {f.message for f in errors(findings, "torch-triplet")}
    assert "torchvision==0.18.0 is built for torch==2.3.0 but the stack pins torch==2.3.1" in triplet
    assert "torchaudio==2.3.0 is built for torch==2.3.0 but the stack pins torch==2.3.1" in triplet
    (xf,) = {f.message for f in errors(findings, "xformers-torch")}
    assert xf == (
        "xformers==0.0.26.post1 was built for torch 2.3.0 but the stack pins torch 2.3.1: "
        "its C++ extensions fail to load"
    )


def test_numpy_2_is_refused_by_torch_23_scipy_and_scikit_learn(copy):
    stack = copy(DEFAULT)
    relock(stack, "numpy", "2.0.0")
    messages = [f.message for f in errors(check(stack), "numpy")]
    assert "numpy 2.0.0 with torch 2.3.0: torch before 2.4 was built against numpy 1.x" in messages
    assert any(m.startswith("scipy==1.11.4 requires numpy") and "<1.28" in m for m in messages)
    assert any(m.startswith("scikit-learn==1.3.2 requires numpy") and "<2.0" in m for m in messages)


def test_unsloth_2024_8_guards_refuse_new_xformers_and_trl(copy):
    stack = copy(DEFAULT)
    relock(stack, "xformers", "0.0.27")
    relock(stack, "trl", "0.9.4")
    messages = [f.message for f in errors(check(stack), "unsloth-guards")]
    assert "unsloth 2024.8 raises at import for xformers >= 0.0.27 (the stack pins xformers 0.0.27)" in messages
    assert "unsloth 2024.8 raises at import for trl >= 0.9.0 (the stack pins trl 0.9.4)" in messages


def test_python_version_the_lock_does_not_support(copy):
    stack = copy(CURRENT)
    edit(stack / "manifest.yml", 'python: ["3.11", "3.12"]', 'python: ["3.10", "3.11", "3.12"]')
    findings = check(stack)
    assert any(
        f.message == "trl==1.15.0 requires Python >=3.11; the stack lists Python 3.10" and f.python == "3.10"
        for f in errors(findings, "python-requires")
    )
    assert any("no lock for Python 3.10" in f.message for f in errors(findings, "lock"))


def test_cuda_13_wheels_need_the_580_driver(copy):
    stack = copy(CURRENT)
    edit(stack / "manifest.yml", 'min_driver: "580.65.06"', 'min_driver: "550.54.15"')
    (finding,) = {f.message: f for f in errors(check(stack), "cuda-driver")}.values()
    assert "torch==2.11.0 brings nvidia-cuda-runtime==13.0.96 (CUDA 13.0), which needs driver >= 580.65.06" in (
        finding.message
    )
    assert "min_driver 550.54.15" in finding.message
    assert finding.fix.startswith("raise min_driver to >= 580.65.06")


def test_declared_cuda_runtime_must_match_the_wheels(copy):
    stack = copy(DEFAULT)
    edit(stack / "manifest.yml", 'cuda_runtime: "12.1"', 'cuda_runtime: "12.4"')
    (finding,) = errors(check(stack), "cuda-driver")
    assert "manifest.yml says cuda_runtime 12.4 but torch==2.3.0 brings nvidia-cuda-runtime-cu12==12.1.105" in (
        finding.message
    )


def test_minor_version_compatibility_is_a_warning(copy):
    stack = copy(DEFAULT)
    edit(stack / "manifest.yml", 'min_driver: "550.54.15"', 'min_driver: "525.60.13"')
    findings = [f for f in check(stack) if f.rule == "cuda-driver"]
    assert [f.severity for f in findings] == [WARN]
    assert "minor-version compatibility (native minimum 530.30.02" in findings[0].message


@pytest.mark.parametrize(
    ("wheel", "problem"),
    [
        ("flash_attn-2.5.8+cu122torch2.3cxx11abiFALSE-cp310-cp310-linux_x86_64.whl", "it is for Python 3.10"),
        ("flash_attn-2.5.8+cu122torch2.3cxx11abiTRUE-cp311-cp311-linux_x86_64.whl", "its C++ ABI is cxx11abiTRUE"),
        ("flash_attn-2.5.8+cu122torch2.2cxx11abiFALSE-cp311-cp311-linux_x86_64.whl", "built for torch 2.2"),
        ("flash_attn-2.5.8+cu118torch2.3cxx11abiFALSE-cp311-cp311-linux_x86_64.whl", "built with CUDA 118"),
        ("flash_attn-2.5.9+cu122torch2.3cxx11abiFALSE-cp311-cp311-linux_x86_64.whl", "it is flash-attn 2.5.9"),
    ],
)
def test_flash_attn_wheel_tags_must_match(copy, wheel, problem):
    stack = copy(DEFAULT)
    edit(stack / "manifest.yml", "flash_attn-2.5.8+cu122torch2.3cxx11abiFALSE-cp311-cp311-linux_x86_64.whl", wheel)
    found = errors(check(stack), "flash-attn")
    assert len(found) == 1 and found[0].python == "3.11"
    assert problem in found[0].message and wheel in found[0].message


def test_missing_flash_attn_wheel_means_a_source_build(copy):
    stack = copy(DEFAULT)
    edit(
        stack / "manifest.yml",
        '    "3.11": flash_attn-2.5.8+cu122torch2.3cxx11abiFALSE-cp311-cp311-linux_x86_64.whl\n',
        "",
    )
    (finding,) = [f for f in check(stack) if f.rule == "flash-attn"]
    assert finding.severity == WARN and "Python 3.11: nodes on it build from source" in finding.message


def test_stale_or_unhashed_lock(copy):
    stack = copy(DEFAULT)
    edit(stack / "requirements.in", "transformers==4.43.3", "transformers==4.43.2")
    lock = stack / "lock-py3.10.txt"
    text = lock.read_text()
    lock.write_text(
        re.sub(r"(peft==0\.11\.1) \\\n(\s+--hash=sha256:[0-9a-f]+ \\\n)*\s+--hash=sha256:[0-9a-f]+", r"\1", text)
    )
    messages = [f.message for f in errors(check(stack), "lock") if f.python == "3.10"]
    assert (
        "requirements.in pins transformers==4.43.2 but the lock has transformers 4.43.3: the lock is stale" in messages
    )
    assert "pins without hashes: peft==0.11.1" in messages


def test_no_date_cutoff(copy):
    stack = copy(DEFAULT)
    edit(stack / "manifest.yml", 'exclude_newer: "2024-08-31"\n', "")
    assert [f.rule for f in errors(check(stack))] == ["date-cutoff"]


def test_xformers_build_is_read_from_metadata_or_cpp_lib_json():
    assert rules.xformers_built_for(Release("xformers", "9", requires_dist=("torch>=2",))) is None
    built = rules.xformers_built_for(
        Release("xformers", "9", extra_files={"xformers/cpp_lib.json": '{"version": {"torch": "2.10.0+cu128"}}'})
    )
    assert built == "2.10.0"


def test_parse_flash_attn_wheel():
    tags = rules.parse_flash_attn_wheel("flash_attn-2.8.3+cu12torch2.7cxx11abiTRUE-cp312-cp312-linux_x86_64.whl")
    assert tags == {
        "version": "2.8.3",
        "cuda": "12",
        "cuda_major": "12",
        "torch": "2.7",
        "cxx11abi": True,
        "python": "3.12",
    }
    assert rules.parse_flash_attn_wheel("flash_attn-2.5.8.tar.gz") is None


def test_a_release_without_a_wheel_for_the_python_is_refused(copy):
    """Found by the demo on Debian 13: torch 2.6's xformers has no cp313 wheel, and its sdist needs torch to build."""
    stack = copy(ON_550)
    shutil.copy(stack / "lock-py3.12.txt", stack / "lock-py3.13.txt")
    edit(stack / "manifest.yml", 'python: ["3.11", "3.12"]', 'python: ["3.11", "3.12", "3.13"]')
    found = errors(check(stack), "wheels")
    assert [f.python for f in found] == ["3.13"]
    assert any(
        f.message.startswith("xformers==0.0.29.post3 has no wheel for CPython 3.13 on linux x86_64") for f in found
    )

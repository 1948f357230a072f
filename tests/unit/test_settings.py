"""The strict settings checks (h100fleet.fleet.settings) and the fleet preflight's report (h100fleet.fleet.preflight).

Plain data in, messages out: each case is a role's spec, the raw and templated values, and the message expected.
The same checks run in every role's preflight through the h100fleet_settings lookup (test_fleet_preflight.py runs
them through ansible-playbook).
"""

from __future__ import annotations

import pytest
import yaml
from helpers import REPO

from h100fleet.fleet import preflight, settings

ROLES = REPO / "roles"


def problems(role: str, values: dict, raw: dict | None = None, **kwargs) -> list[str]:
    spec = settings.Spec.load(ROLES / role)
    raw = {**spec.defaults, **(raw if raw is not None else values)}
    templated = {name: value for name, value in raw.items() if name in spec.options and "{{" not in str(value)}
    templated.update(values)
    return [str(p) for p in settings.check(spec, raw, templated, "node-1", **kwargs)]


@pytest.mark.parametrize(
    ("role", "values", "expected"),
    [
        # A string where a list is meant: ansible's own validation would pass it on as typed.
        (
            "node_baseline",
            {"node_baseline_ntp_servers": "pool.ntp.org"},
            "node-1: node_baseline_ntp_servers is 'pool.ntp.org'; expected a list (a YAML sequence, e.g. [a, b]).",
        ),
        (
            "node_baseline",
            {"node_baseline_extra_packages": ["htop", 7]},
            "node-1: node_baseline_extra_packages is [htop, 7] (a list); item 1 (7): expected a string (quote it",
        ),
        # An unquoted number where a version string is meant.
        (
            "nvidia_driver",
            {"nvidia_driver_version": 550},
            "node-1: nvidia_driver_version is 550 (a number); expected a string (quote it in YAML).",
        ),
        (
            "cuda_toolkit",
            {"cuda_toolkit_version": 12.4},
            "node-1: cuda_toolkit_version is 12.4 (a number); expected a string (quote it in YAML).",
        ),
        (
            "nvidia_driver",
            {"nvidia_driver_version": " 550"},
            "node-1: nvidia_driver_version is ' 550'; expected no leading or trailing whitespace.",
        ),
        (
            "nvidia_driver",
            {"nvidia_driver_version": "r550"},
            "node-1: nvidia_driver_version is 'r550'; expected a branch such as \"550\" or an exact version",
        ),
        (
            "training_service",
            {"training_service_cuda_visible_devices": "0,1,1"},
            "training_service_cuda_visible_devices is '0,1,1'; expected each GPU once; 1 is listed more than once.",
        ),
        (
            "training_service",
            {"training_service_cuda_visible_devices": "0, 1"},
            "training_service_cuda_visible_devices is '0, 1'; expected a CUDA_VISIBLE_DEVICES list",
        ),
        (
            "training_service",
            {"training_service_nproc_per_node": "8"},
            "training_service_nproc_per_node is '8'; expected \"auto\" or a whole number of at least 1",
        ),
        (
            "training_service",
            {"training_service_nproc_per_node": 0},
            'training_service_nproc_per_node is 0 (a number); expected "auto" or a whole number',
        ),
        (
            "rollout",
            {"rollout_batch": "150%"},
            "node-1: rollout_batch is '150%'; expected a count of 1 or more nodes or a percentage from 1% to 100%.",
        ),
        (
            "rollout",
            {"rollout_canary": 0},
            "node-1: rollout_canary is 0 (a number); expected a count of 1 or more nodes or a percentage",
        ),
        (
            "gpu_validate",
            {"gpu_validate_min_gemm_tflops": "lots"},
            "node-1: gpu_validate_min_gemm_tflops is 'lots'; expected a number.",
        ),
        (
            "gpu_validate",
            {"gpu_validate_fail_on": "CRIT"},
            "node-1: gpu_validate_fail_on is 'CRIT'; expected a list",
        ),
        (
            "python_stack",
            {"python_stack_keep": "three"},
            "node-1: python_stack_keep is 'three'; expected a whole number.",
        ),
        (
            "training_service",
            {"training_service_enabled": "yes please"},
            "node-1: training_service_enabled is 'yes please'; expected true or false.",
        ),
        (
            "node_baseline",
            {"node_baseline_debian_mirror": "deb.debian.org/debian"},
            "node-1: node_baseline_debian_mirror is 'deb.debian.org/debian'; expected an http:// or https:// URL.",
        ),
    ],
    ids=[
        "string-for-list",
        "list-item",
        "number-for-version",
        "float-for-version",
        "whitespace",
        "version-shape",
        "duplicate-gpu",
        "gpu-list-spaces",
        "nproc-string",
        "nproc-zero",
        "batch-over-100",
        "canary-zero",
        "string-for-float",
        "string-for-list-of-statuses",
        "string-for-int",
        "string-for-bool",
        "url",
    ],
)
def test_wrong_shape_is_refused_by_name(role, values, expected):
    found = problems(role, values)
    assert any(expected in p for p in found), found


@pytest.mark.parametrize(
    ("values"),
    [
        {"rollout_batch": "25%", "rollout_canary": 1},
        {"rollout_batch": "100%", "rollout_canary": "2"},  # -e rollout_canary=2 arrives as a string
    ],
)
def test_good_values_pass(values):
    assert problems("rollout", values) == []


def test_command_line_strings_for_numbers_and_booleans_pass():
    # -e name=value gives strings; roles read these through | int and | bool.
    assert problems("training_service", {"training_service_restart_on_change": "true"}) == []
    assert problems("python_stack", {"python_stack_keep": "4"}) == []


def test_every_default_passes_its_own_checks():
    for role in sorted(p.name for p in ROLES.iterdir() if (p / "meta" / "argument_specs.yml").exists()):
        spec = settings.Spec.load(ROLES / role)
        plain = {name: value for name, value in spec.defaults.items() if "{{" not in str(value)}
        assert [str(p) for p in settings.check(spec, spec.defaults, plain, "node-1")] == [], role


def test_unknown_setting_with_the_role_prefix_names_the_closest_one():
    found = problems(
        "python_stack", {}, raw={"python_stack_idd": "x", "python_stack_venv": "/opt/x"}, outputs=["python_stack_venv"]
    )
    assert found == ["node-1: python_stack_idd is not a setting of python_stack; did you mean python_stack_id?"]


def test_unknown_setting_without_a_close_name():
    found = problems("cuda_toolkit", {}, raw={"cuda_toolkit_frobnicate": True})
    assert found == [
        "node-1: cuda_toolkit_frobnicate is not a setting of cuda_toolkit; cuda_toolkit has no such setting."
    ]


def test_a_default_taken_from_a_fleet_pin_is_reported_under_the_pin():
    spec = settings.Spec.load(ROLES / "nvidia_driver")
    raw = dict(spec.defaults)  # nvidia_driver_version left at its default, which reads h100fleet_driver_branch
    found = [str(p) for p in settings.check(spec, raw, {"nvidia_driver_version": 550}, "node-1")]
    assert found == [
        "node-1: h100fleet_driver_branch (which sets nvidia_driver_version) is 550 (a number); "
        "expected a string (quote it in YAML)."
    ]
    # Set directly, the role's own variable is the one named.
    raw["nvidia_driver_version"] = 550
    found = [str(p) for p in settings.check(spec, raw, {"nvidia_driver_version": 550}, "node-1")]
    assert found[0].startswith("node-1: nvidia_driver_version is 550")


def test_null_only_where_the_spec_allows_it():
    assert problems("gpu_validate", {"gpu_validate_expected_gpus": None}) == []
    assert problems("nvidia_driver", {"nvidia_driver_version": None}) == [
        "node-1: nvidia_driver_version is null (null); expected a string."
    ]


def test_report_lists_every_problem_of_every_host_once():
    hostvars = {
        "a": {
            "__fleet_preflight_problems": [
                "a: h100fleet_driver_branch is 550 (a number); expected a string (quote it in YAML).",
                {
                    "role": "nvidia_driver",
                    "message": "a: h100fleet_driver_branch (which sets nvidia_driver_version) is 550",
                },
                {"role": "cuda_toolkit", "message": "a runs Fedora 40, which cuda_toolkit does not support."},
            ]
        },
        "b": {"__fleet_preflight_problems": []},
        "c": {},  # never checked: unreachable
    }
    doc = preflight.report(["a", "b", "c"], hostvars)
    assert doc["hosts"]["b"] == {"status": "ok", "problems": []}
    assert [p["role"] for p in doc["hosts"]["a"]["problems"]] == ["fleet pins", "cuda_toolkit"]
    assert doc["hosts"]["c"]["status"] == "refused"
    text = preflight.message(doc)
    assert text.splitlines()[0] == (
        "Preflight refused 2 of 3 hosts (3 problems); nothing was changed. Fix these and run again:"
    )
    assert "- a [cuda_toolkit]: a runs Fedora 40, which cuda_toolkit does not support." in text
    assert "- c [-]: could not be checked" in text


def test_report_of_a_clean_fleet():
    doc = preflight.report(["a"], {"a": {"__fleet_preflight_problems": []}})
    assert doc["problems"] == []
    assert preflight.message(doc) == "Preflight: 1 of 1 hosts ok; nothing was changed by this check."


def test_messages_of_a_failed_task_are_one_per_line():
    result = {"msg": "n: x_a is 1 (a number); expected a string.\nn: x_b is 'q'; expected a list.\n"}
    assert preflight.messages(result, "x") == [
        {"role": "x", "message": "n: x_a is 1 (a number); expected a string."},
        {"role": "x", "message": "n: x_b is 'q'; expected a list."},
    ]


def _owner(name: str, specs: dict[str, settings.Spec]) -> settings.Spec | None:
    """The role whose prefix a variable carries (the longest), or the fleet pins' spec for h100fleet_*."""
    if name.startswith("h100fleet_"):
        return specs["fleet_preflight"]
    owners = [role for role in specs if name.startswith(f"{role}_")]
    return specs[max(owners, key=len)] if owners else None


def test_the_shipped_inventories_pass_the_checks():
    specs = {p.name: settings.Spec.load(p) for p in ROLES.iterdir() if (p / "meta" / "argument_specs.yml").exists()}
    files = sorted((REPO / "inventory").glob("*/*_vars/*.yml"))
    assert files
    for path in files:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for name, value in doc.items():
            if name.startswith("ansible_"):
                continue
            spec = _owner(name, specs)
            assert spec is not None, f"{path}: {name} belongs to no role"
            prefixes = ["h100fleet_"] if spec.role == "fleet_preflight" else [f"{spec.role}_"]
            found = settings.check(spec, {name: value}, {name: value}, path.name, prefixes=prefixes)
            assert [str(p) for p in found] == [], path


def test_a_pin_problem_names_the_pin_and_the_role_setting_it_sets():
    spec = settings.Spec.load(ROLES / "nvidia_driver")
    raw = {**spec.defaults}
    values = {"nvidia_driver_version": 550}
    found = settings.check(spec, {**raw, "h100fleet_driver_branch": 550}, values, "n")
    assert [p.as_dict() for p in found] == [
        {
            "variable": "h100fleet_driver_branch",
            "setting": "nvidia_driver_version",
            "message": "n: h100fleet_driver_branch (which sets nvidia_driver_version) is 550 (a number); expected a "
            "string (quote it in YAML).",
        }
    ]


def test_a_role_preflight_collects_problems_and_checks_only_clean_settings():
    found = [{"variable": "h100fleet_driver_branch", "setting": "nvidia_driver_version", "message": "n: pin"}]
    # A check of a setting whose value was already refused (by its own name or its pin's) is skipped.
    assert not preflight.clean(found, "nvidia_driver_version")
    assert not preflight.clean(found, ["nvidia_driver_cuda_version", "h100fleet_driver_branch"])
    assert preflight.clean(found, "nvidia_driver_cuda_version", ["nvidia_driver_source"])
    found = preflight.problem(found, "nvidia_driver_cuda_version", "nvidia_driver_cuda_version is '12.7';\n  expected")
    assert found[-1] == {
        "variable": "nvidia_driver_cuda_version",
        "setting": "nvidia_driver_cuda_version",
        "message": "nvidia_driver_cuda_version is '12.7'; expected",
    }
    assert not preflight.clean(found, "nvidia_driver_cuda_version")
    # The refusal is one problem a line: what the fleet preflight records, line by line, under the role.
    refusal = preflight.refusal(found)
    assert refusal == "n: pin\nnvidia_driver_cuda_version is '12.7'; expected"
    assert [m["message"] for m in preflight.messages({"msg": refusal}, "nvidia_driver")] == refusal.splitlines()
    assert preflight.refusal([]) == ""

"""Strict checks of a role's settings, as the role sees them, against its meta/argument_specs.yml.

ansible-core's own argument-spec validation checks a converted copy and leaves each variable as the user typed it:
a string where a list is declared passes and reaches a loop one character at a time. These checks never convert;
a value of the wrong shape is refused by name, with what is expected, so a role only ever uses a value that was
checked. They also name variables that carry a role's prefix but are none of its settings (typos), with the
closest known name, and check the shapes that a type alone cannot say (versions, URLs, batch sizes, GPU lists).

Called through the `h100fleet_settings` lookup (plugins/lookup), which templates each setting in the role's
context; everything here is plain data in, messages out.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from h100fleet.fleet import trainer_unit

# A fleet pin named in a default's template (not a quoted fact name such as ansible_local['h100fleet_stack']).
_PIN = re.compile(r"(?<!['\"\w])h100fleet_[a-z0-9_]+\b(?!['\"])")
_TRUE_FALSE = {"true": True, "false": False}


@dataclass(frozen=True)
class Problem:
    """One refused setting: the variable to change and what is wrong with it."""

    variable: str
    message: str
    # The role's own setting the problem is in, where it differs from variable (a fleet pin that sets it).
    setting: str = ""

    def __str__(self) -> str:
        return self.message

    def as_dict(self) -> dict[str, str]:
        """The form a role's preflight collects (h100fleet.fleet.preflight.problem)."""
        return {"variable": self.variable, "setting": self.setting or self.variable, "message": self.message}


@dataclass(frozen=True)
class Spec:
    """The options of one argument_specs entry point."""

    role: str
    options: Mapping[str, Mapping[str, object]]
    defaults: Mapping[str, object] = field(default_factory=dict)

    @classmethod
    def load(cls, role_path: str | Path, entry_point: str = "main") -> Spec:
        role_path = Path(role_path)
        doc = yaml.safe_load((role_path / "meta" / "argument_specs.yml").read_text(encoding="utf-8"))
        options = doc["argument_specs"][entry_point].get("options") or {}
        defaults_file = role_path / "defaults" / "main.yml"
        defaults = yaml.safe_load(defaults_file.read_text(encoding="utf-8")) if defaults_file.exists() else {}
        return cls(role=role_path.name, options=options, defaults=defaults or {})


_KINDS: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (bool, "a boolean"),
    ((int, float), "a number"),
    (str, "a string"),
    (Mapping, "a mapping"),
    ((list, tuple), "a list"),
)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return next((name for kind, name in _KINDS if isinstance(value, kind)), type(value).__name__)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_str(value: object, _elements: str | None) -> str | None:
    if not isinstance(value, str):
        return "expected a string" + (" (quote it in YAML)" if _is_number(value) else "")
    return "expected no leading or trailing whitespace" if value != value.strip() else None


def _check_bool(value: object, _elements: str | None) -> str | None:
    ok = isinstance(value, bool) or (isinstance(value, str) and value.lower() in _TRUE_FALSE)
    return None if ok else "expected true or false"


def _check_int(value: object, _elements: str | None) -> str | None:
    ok = (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value)
    )
    return None if ok else "expected a whole number"


def _check_float(value: object, _elements: str | None) -> str | None:
    ok = _is_number(value) or (isinstance(value, str) and re.fullmatch(r"-?[0-9]+([.][0-9]+)?([eE]-?[0-9]+)?", value))
    return None if ok else "expected a number"


def _check_list(value: object, elements: str | None) -> str | None:
    if not isinstance(value, (list, tuple)):
        return "expected a list (a YAML sequence, e.g. [a, b])"
    for i, item in enumerate(value if elements else ()):
        wrong = _type_problem(item, elements, None)  # type: ignore[arg-type]
        if wrong:
            return f"item {i} ({item!r}): {wrong}"
    return None


def _check_dict(value: object, _elements: str | None) -> str | None:
    return None if isinstance(value, Mapping) else "expected a mapping"


# Strings from `-e name=value` are accepted for int, float and bool where they spell one unambiguously: roles read
# those settings through | int, | float and | bool. Every other type must be what the spec declares.
_TYPES: dict[str, Callable[[object, str | None], str | None]] = {
    "str": _check_str,
    "path": _check_str,
    "bool": _check_bool,
    "int": _check_int,
    "float": _check_float,
    "list": _check_list,
    "dict": _check_dict,
}


def _type_problem(value: object, type_: str, elements: str | None) -> str | None:
    """What is wrong with value for an argument-spec type, or None (type raw takes anything)."""
    check = _TYPES.get(type_)
    return check(value, elements) if check else None


# Shapes a type cannot say. Each returns what is expected, or None when the value fits.
def _driver_version(value: object) -> str | None:
    ok = isinstance(value, str) and re.fullmatch(r"[0-9]{3}([.][0-9]+){0,2}", value)
    return None if ok else 'expected a branch such as "550" or an exact version such as "550.163.01"'


def _driver_version_or_empty(value: object) -> str | None:
    return None if value == "" else _driver_version(value)


def _major_minor(value: object) -> str | None:
    ok = isinstance(value, str) and re.fullmatch(r"[0-9]+[.][0-9]+", value)
    return None if ok else "expected MAJOR.MINOR, e.g. 12.4"


def _url(value: object) -> str | None:
    ok = isinstance(value, str) and re.fullmatch(r"https?://[^\s/]+(/\S*)?", value)
    return None if ok else "expected an http:// or https:// URL"


def _url_or_empty(value: object) -> str | None:
    return None if value == "" else _url(value)


def _stack_id_or_empty(value: object) -> str | None:
    ok = value == "" or (isinstance(value, str) and re.fullmatch(r"[a-z0-9][a-z0-9.+_-]*", value))
    return None if ok else 'expected a stack id (lower-case letters, digits and .+_-) or ""'


def _batch(value: object) -> str | None:
    """A rollout batch: a count of nodes (1 or more) or a percentage from 1% to 100%."""
    if isinstance(value, int) and not isinstance(value, bool):
        return None if value >= 1 else "expected a count of 1 or more nodes or a percentage from 1% to 100%"
    text = str(value).strip() if isinstance(value, str) else ""
    m = re.fullmatch(r"([0-9]+)(%?)", text)
    if m and ((m.group(2) and 1 <= int(m.group(1)) <= 100) or (not m.group(2) and int(m.group(1)) >= 1)):
        return None
    return "expected a count of 1 or more nodes or a percentage from 1% to 100%"


def _gpu_list(value: object) -> str | None:
    """CUDA_VISIBLE_DEVICES: "" or a comma-separated list of indices or GPU-/MIG- UUIDs, each once."""
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        return 'expected a CUDA_VISIBLE_DEVICES list such as "0" or "0,1" (or "")'
    items = [] if str(value) == "" else str(value).split(",")
    if any(not re.fullmatch(r"[0-9]+|(GPU|MIG)-[A-Za-z0-9/-]+", item) for item in items):
        return 'expected a CUDA_VISIBLE_DEVICES list such as "0" or "0,1": indices or GPU-/MIG- UUIDs, no spaces'
    repeated = sorted({item for item in items if items.count(item) > 1})
    if repeated:
        return f"expected each GPU once; {', '.join(repeated)} is listed more than once"
    return None


def _nproc(value: object) -> str | None:
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return None
    return 'expected "auto" or a whole number of at least 1 (unquoted)'


def _rdzv_endpoint_or_empty(value: object) -> str | None:
    return None if value == "" else trainer_unit.endpoint_problem(value)


def _rdzv_id(value: object) -> str | None:
    return trainer_unit.job_id_problem(value)


def _nccl_list(value: object) -> str | None:
    """NCCL_SOCKET_IFNAME / NCCL_IB_HCA: "" or a comma-separated list of names (HCAs with an optional :port), with
    an optional leading ^ (all but these) or = (exactly these)."""
    item = r"[A-Za-z0-9_.-]+(:[0-9]+)?"
    ok = isinstance(value, str) and (value == "" or re.fullmatch(rf"[\^=]?{item}(,{item})*", value))
    return None if ok else 'expected "" or a list such as eth0, ^docker,lo or mlx5_0:1,mlx5_1:1 (no spaces)'


SHAPES: dict[str, Callable[[object], str | None]] = {
    "h100fleet_driver_branch": _driver_version,
    "h100fleet_cuda_version": _major_minor,
    "h100fleet_nvidia_repo_base_url": _url,
    "h100fleet_stack_id": _stack_id_or_empty,
    "nvidia_driver_version": _driver_version,
    "nvidia_driver_cuda_version": _major_minor,
    "nvidia_driver_nvidia_repo_base_url": _url,
    "cuda_toolkit_version": _major_minor,
    "cuda_toolkit_nvidia_repo_base_url": _url,
    "node_baseline_debian_mirror": _url,
    "node_baseline_debian_security_mirror": _url,
    "node_baseline_package_proxy": _url_or_empty,
    "gpu_validate_driver": _driver_version_or_empty,
    "gpu_validate_compute_capability": _major_minor,
    "python_stack_index_url": _url,
    "python_stack_wheelhouse_url": _url_or_empty,
    "python_stack_uv_python_mirror": _url_or_empty,
    "training_service_cuda_visible_devices": _gpu_list,
    "training_service_nproc_per_node": _nproc,
    "training_service_rdzv_endpoint": _rdzv_endpoint_or_empty,
    "training_service_rdzv_id": _rdzv_id,
    "training_service_nccl_socket_ifname": _nccl_list,
    "training_service_nccl_ib_hca": _nccl_list,
    "rollout_canary": _batch,
    "rollout_batch": _batch,
    "rollout_driver_version": _driver_version_or_empty,
    "rollout_from_stack": _stack_id_or_empty,
}


def _plain(value: object) -> object:
    """The value as plain Python data (Ansible hands over its own str, int, list and dict subclasses)."""
    if isinstance(value, bool) or value is None:
        return value
    for kind in (str, int, float):
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


def _fmt(value: object) -> str:
    """A value as a user would write it in YAML, on one line."""
    value = _plain(value)
    text = repr(value) if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True, width=1000)
    text = text.strip().removesuffix("...").strip()
    return text if len(text) <= 80 else text[:77] + "..."


def source_pin(spec: Spec, name: str, raw: object) -> str | None:
    """The fleet pin (h100fleet_*) a setting takes its value from: when the setting still has its default and that
    default names one. A problem in the value is then the pin's, and is reported under the pin's name."""
    default = spec.defaults.get(name)
    if raw != default or not isinstance(default, str):
        return None
    pins = _PIN.findall(default)
    return pins[0] if pins else None


def check(
    spec: Spec,
    raw: Mapping[str, object],
    values: Mapping[str, object],
    host: str,
    *,
    prefixes: Iterable[str] = (),
    outputs: Iterable[str] = (),
) -> list[Problem]:
    """Every problem in the settings a role sees on one host.

    raw: each variable as defined (templates untouched), to tell defaults from what the user set; values: the same
    names templated as the role sees them. prefixes: names that belong to this role (default: "<role>_");
    outputs: variables with the prefix that the role itself sets for later plays.
    """
    problems: list[Problem] = []
    for name, option in spec.options.items():
        if name not in values:
            continue
        value = values[name]
        pin = source_pin(spec, name, raw.get(name))
        shown = f"{pin} (which sets {name})" if pin else name
        variable = pin or name
        if value is None and option.get("default", "") is None:
            continue  # the spec allows null (its default)
        wrong = _type_problem(value, str(option.get("type", "str")), option.get("elements"))  # type: ignore[arg-type]
        choices = option.get("choices")
        if wrong is None and choices is not None and value not in choices:
            wrong = "expected one of " + ", ".join(_fmt(c) for c in choices)  # type: ignore[union-attr]
        if wrong is None and name in SHAPES:
            wrong = SHAPES[name](value)
        if wrong:
            kind = "" if isinstance(value, str) else f" ({_kind(value)})"
            problems.append(Problem(variable, f"{host}: {shown} is {_fmt(value)}{kind}; {wrong}.", name))
    known = set(spec.options) | set(outputs)
    for prefix in tuple(prefixes) or (f"{spec.role}_",):
        for name in sorted(raw):
            if name.startswith(prefix) and name not in known:
                # Compared without the shared prefix, which would make every name look close.
                names = sorted(o[len(prefix) :] for o in spec.options if o.startswith(prefix))
                close = difflib.get_close_matches(name[len(prefix) :], names, n=1)
                hint = f"; did you mean {prefix}{close[0]}?" if close else f"; {spec.role} has no such setting."
                problems.append(Problem(name, f"{host}: {name} is not a setting of {spec.role}{hint}"))
    return problems

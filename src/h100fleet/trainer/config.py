"""The trainer's YAML config: schema, defaults and validation, all before anything heavy is imported.

Every problem is reported at once, one line each, naming the field, the value and what is expected:

    train.batch_size = 0: expected a positive integer or "auto"
    model.path is missing: expected the directory of a locally staged model (config.json, tokenizer, weights)
    train.batchsize = 4: expected a known field (one of: backend, ..., batch_size, ...; did you mean batch_size?)

and the trainer exits with EX_CONFIG (78), which the systemd unit lists in RestartPreventExitStatus. Relative
paths are resolved against the directory of the config file. docs/trainer.md documents every field.

Needs only PyYAML (a dependency of transformers, peft and accelerate in both shipped stacks).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, get_type_hints

STACK_ID_ENV = "H100FLEET_STACK_ID"
DEFAULT_CONFIG_PATH = "/etc/h100fleet/trainer.yml"
DEFAULT_OUTPUT_DIR = "/var/lib/h100fleet/trainer"
DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()


@dataclass(frozen=True)
class Issue:
    """One config problem: the field's dotted name, the value found (MISSING when absent) and what is expected."""

    field: str
    value: Any
    expected: str

    def __str__(self) -> str:
        if self.value is MISSING:
            return f"{self.field} is missing: expected {self.expected}"
        return f"{self.field} = {show(self.value)}: expected {self.expected}"


class ConfigError(Exception):
    """Raised with every issue found; str() is one line per issue."""

    def __init__(self, issues: list[Issue]):
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


def show(value: Any, limit: int = 80) -> str:
    """A value as it would read in YAML/JSON (true, null, "text"), shortened to limit characters."""
    if isinstance(value, Path):
        value = str(value)
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- field kinds: each returns the converted value or raises _Bad ---------------------------------------------------


class _Bad(Exception):
    pass


@dataclass(frozen=True)
class Kind:
    expected: str
    convert: Callable[[Any], Any]
    resolve: bool = False  # a path that resolves against the config file's directory


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int(minimum: int) -> Kind:
    def convert(v: Any) -> int:
        if not _is_int(v) or v < minimum:
            raise _Bad
        return v

    text = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    return Kind(text, convert)


def _g(x: float) -> str:
    return f"{x:g}"


def _number(low: float, high: float, *, low_open: bool = False, high_open: bool = False, note: str = "") -> Kind:
    """A float in the range that makes sense for the field: a slip such as 2e4 for 2e-4 is refused, not trained
    with. PyYAML reads 2e-4 (no dot) as a string: numeric strings are accepted."""

    def convert(v: Any) -> float:
        if isinstance(v, bool):
            raise _Bad
        if isinstance(v, str):
            try:
                v = float(v)
            except ValueError:
                raise _Bad from None
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            raise _Bad
        v = float(v)
        if v < low or (low_open and v == low) or v > high or (high_open and v == high):
            raise _Bad
        return v

    text = f"a number in {'(' if low_open else '['}{_g(low)}, {_g(high)}{')' if high_open else ']'}"
    return Kind(text + (f" ({note})" if note else ""), convert)


def _choice(*options: str) -> Kind:
    def convert(v: Any) -> str:
        if v not in options or not isinstance(v, str):
            raise _Bad
        return v

    return Kind("one of " + ", ".join(json.dumps(o) for o in options), convert)


def _bool() -> Kind:
    def convert(v: Any) -> bool:
        if not isinstance(v, bool):
            raise _Bad
        return v

    return Kind("true or false", convert)


def _text(pattern: str | None = None, text: str = "a non-empty string") -> Kind:
    def convert(v: Any) -> str:
        if not isinstance(v, str) or not v.strip() or (pattern and not re.fullmatch(pattern, v)):
            raise _Bad
        return v

    return Kind(text, convert)


def _path(text: str, resolve: bool = False) -> Kind:
    def convert(v: Any) -> str:
        if not isinstance(v, str) or not v.strip() or "\0" in v:
            raise _Bad
        return v

    return Kind(text, convert, resolve)


def _optional(kind: Kind) -> Kind:
    def convert(v: Any) -> Any:
        return None if v is None else kind.convert(v)

    return Kind(kind.expected + " or null", convert, kind.resolve)


def _or_auto(kind: Kind) -> Kind:
    def convert(v: Any) -> Any:
        return "auto" if v == "auto" and isinstance(v, str) else kind.convert(v)

    return Kind(kind.expected + ' or "auto"', convert)


def _modules() -> Kind:
    def convert(v: Any) -> tuple[str, ...]:
        if not isinstance(v, list) or not v:
            raise _Bad
        if not all(isinstance(m, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", m) for m in v):
            raise _Bad
        if len(set(v)) != len(v):
            raise _Bad
        return tuple(v)

    return Kind("a non-empty list of distinct module names (e.g. [q_proj, k_proj, v_proj, o_proj])", convert)


# --- the schema: each field declared once, on its dataclass ---------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """A config field as the validation, --print-defaults and the docs test see it (read off the dataclasses)."""

    name: str
    kind: Kind
    default: Any = MISSING  # MISSING: required
    doc: str = ""


def option(kind: Kind, default: Any = MISSING, doc: str = "") -> Any:
    """Declare a config field on a section dataclass: its kind (type, range, error text), its default (MISSING:
    required) and its one-line doc. The dataclass field itself has no default: from_dict fills every field."""
    return dataclasses.field(metadata={"kind": kind, "default": default, "doc": doc})


# Sections of the config: fields of Config whose type is a section dataclass.
_SECTION = {"section": True, "required": False}
_REQUIRED_SECTION = {"section": True, "required": True}


def fields_of(cls: type) -> tuple[Field, ...]:
    return tuple(
        Field(f.name, f.metadata["kind"], f.metadata["default"], f.metadata["doc"])
        for f in dataclasses.fields(cls)
        if "kind" in f.metadata
    )


@dataclass(frozen=True)
class ModelConfig:
    path: str = option(
        _path("the directory of a locally staged model (config.json, tokenizer, weights)", resolve=True),
        doc="local model directory (a hub id only with allow_download: true)",
    )
    allow_download: bool = option(_bool(), False, "allow fetching model.path from the Hugging Face hub at run time")
    chat_template: str | None = option(
        _optional(_path("the path of a Jinja chat template file", resolve=True)),
        None,
        "a Jinja file that replaces the tokenizer's chat template",
    )


@dataclass(frozen=True)
class DataConfig:
    path: str = option(_path("the path of a JSONL training file", resolve=True), doc="JSONL, one record a line")
    format: str = option(_choice("auto", "messages", "prompt_response"), "auto", "record format; auto: per record")
    max_seq_length: int = option(_int(16), 2048, "tokens per training sequence")
    packing: bool = option(_bool(), True, "pack examples into full sequences (else pad each to max_seq_length)")
    loss_on: str = option(_choice("assistant", "all"), "assistant", "tokens that carry loss")
    shuffle: bool = option(_bool(), True, "shuffle each epoch (deterministic from the seed)")
    seed: int | None = option(_optional(_int(0)), None, "shuffling seed; null: train.seed")
    cache: bool = option(_bool(), True, "keep the tokenized sequences in <output_dir>/data-cache for the next start")


@dataclass(frozen=True)
class LoraConfig:
    r: int = option(_int(1), 64, "LoRA rank")
    alpha: float = option(_number(0.0, 4096.0, low_open=True), 16.0, "LoRA alpha (scale = alpha / r)")
    dropout: float = option(_number(0.0, 1.0, high_open=True), 0.0, "LoRA dropout; 0 keeps Unsloth's fast LoRA kernels")
    target_modules: tuple[str, ...] = option(_modules(), DEFAULT_TARGET_MODULES, "modules that get adapters")


@dataclass(frozen=True)
class TrainConfig:
    backend: str = option(
        _choice("auto", "unsloth", "hf"),
        "auto",
        "auto: unsloth on a GPU where the stack's Unsloth can train this world size, else hf",
    )
    device: str = option(_choice("auto", "cuda", "cpu"), "auto", "auto: cuda when available")
    dtype: str = option(_choice("auto", "bfloat16", "float32"), "auto", "auto: bfloat16 on CUDA, float32 on CPU")
    output_dir: str = option(_path("a directory the trainer can create and write to", resolve=True), DEFAULT_OUTPUT_DIR)
    epochs: float = option(_number(0.0, 1000.0, low_open=True), 1.0, "passes over the data")
    max_steps: int | None = option(_optional(_int(1)), None, "optimizer steps; null: from epochs")
    batch_size: int | str = option(_or_auto(_int(1)), "auto", "micro-batch (sequences per forward pass, per process)")
    global_batch_size: int | None = option(
        _optional(_int(1)), None, "sequences per optimizer step over all processes; sets the accumulation"
    )
    gradient_accumulation_steps: int = option(_int(1), 1, "micro-batches per optimizer step")
    gradient_checkpointing: bool | str = option(_or_auto(_bool()), "auto", "recompute activations in backward")
    auto_max_batch_size: int = option(_int(1), 16, "largest micro-batch the automatic choice considers")
    auto_memory_fraction: float = option(
        _number(0.0, 1.0, low_open=True), 0.9, "share of GPU memory the automatic choice may plan to use"
    )
    learning_rate: float = option(
        _number(1e-8, 0.1, note="AdamW on LoRA weights: typically 1e-5 to 1e-3"), 2e-4, "AdamW learning rate"
    )
    lr_scheduler: str = option(_choice("linear", "cosine", "constant"), "linear", "decay after warm-up")
    warmup_steps: int = option(_int(0), 10, "linear warm-up steps")
    weight_decay: float = option(_number(0.0, 1.0), 0.0, "AdamW weight decay")
    max_grad_norm: float | None = option(
        _optional(_number(0.0, 1000.0, low_open=True)), 1.0, "gradient clipping; null: none"
    )
    seed: int = option(_int(0), 3407, "seed of LoRA init, dropout and shuffling")
    collective_timeout_s: float = option(
        _number(10.0, 86400.0),
        600.0,
        "under torchrun: seconds a rank waits for the others (a step's reduction, rank 0's tokenization, "
        "autotuning and checkpoint writes) before it fails",
    )


@dataclass(frozen=True)
class CheckpointConfig:
    every_steps: int = option(_int(1), 100, "optimizer steps between checkpoints")
    keep_last: int = option(_int(1), 3, "checkpoints kept")
    dir: str = option(_optional(_path("a directory path", resolve=True)), None, "null: <output_dir>/checkpoints")


@dataclass(frozen=True)
class ProgressConfig:
    every_steps: int = option(
        _int(1),
        10,
        "optimizer steps between status/log/TensorBoard updates (and after the first step of a start)",
    )
    status_file: str = option(_optional(_path("a file path", resolve=True)), None, "null: <output_dir>/status.json")
    metrics_file: str = option(_optional(_path("a file path", resolve=True)), None, "null: <output_dir>/metrics.jsonl")
    tensorboard: bool = option(_bool(), True, "write TensorBoard event files when tensorboard is importable")
    tensorboard_dir: str = option(
        _optional(_path("a directory path", resolve=True)), None, "null: <output_dir>/tensorboard"
    )


@dataclass(frozen=True)
class Config:
    model: ModelConfig = dataclasses.field(metadata=_REQUIRED_SECTION)
    data: DataConfig = dataclasses.field(metadata=_REQUIRED_SECTION)
    lora: LoraConfig = dataclasses.field(metadata=_SECTION)
    train: TrainConfig = dataclasses.field(metadata=_SECTION)
    checkpoint: CheckpointConfig = dataclasses.field(metadata=_SECTION)
    progress: ProgressConfig = dataclasses.field(metadata=_SECTION)
    stack_id: str | None = option(
        _optional(_text(r"[A-Za-z0-9._+-]+", "a stack id of letters, digits, '.', '_', '+', '-'")),
        None,
        f"shown in status and checkpoints; null: ${STACK_ID_ENV}, else unknown",
    )
    source: str | None = None  # the file it was read from

    @property
    def data_seed(self) -> int:
        return self.train.seed if self.data.seed is None else self.data.seed

    def resolved_stack_id(self, environ: dict[str, str] | None = None) -> str:
        env = os.environ if environ is None else environ
        return self.stack_id or env.get(STACK_ID_ENV, "").strip() or "unknown"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["lora"]["target_modules"] = list(self.lora.target_modules)
        return out


_HINTS = get_type_hints(Config)
_SECTION_TYPES: dict[str, type] = {
    f.name: _HINTS[f.name] for f in dataclasses.fields(Config) if f.metadata.get("section")
}
SCHEMA: dict[str, tuple[Field, ...]] = {name: fields_of(cls) for name, cls in _SECTION_TYPES.items()}
TOP_LEVEL: tuple[Field, ...] = fields_of(Config)
REQUIRED_SECTIONS = tuple(f.name for f in dataclasses.fields(Config) if f.metadata.get("required"))
# Paths resolve against the config file's directory (model.path only when it is no hub id: see from_dict).
PATH_FIELDS = tuple((name, f.name) for name, spec in SCHEMA.items() for f in spec if f.kind.resolve)


def _unknown(field: str, value: Any, known: list[str]) -> Issue:
    name = field.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return Issue(field, value, f"a known field (one of: {', '.join(known)}{hint})")


def _resolve(value: str | None, base: Path) -> str | None:
    if value is None:
        return None
    path = Path(os.path.expanduser(value))
    return str(path if path.is_absolute() else (base / path))


def from_dict(raw: Any, base_dir: str | Path = ".", source: str | None = None) -> Config:
    """Validate a parsed YAML document; raise ConfigError with every issue. Relative paths resolve against base_dir."""
    issues: list[Issue] = []
    if not isinstance(raw, dict):
        raise ConfigError([Issue("(top level)", raw, "a mapping with the sections model, data, lora, train, ...")])
    base = Path(base_dir).resolve()
    known_top = sorted([*SCHEMA, *(f.name for f in TOP_LEVEL)])
    for key in raw:
        if key not in SCHEMA and key not in {f.name for f in TOP_LEVEL}:
            issues.append(_unknown(str(key), raw[key], known_top))
    values = {section: _section(section, spec, raw.get(section, MISSING), issues) for section, spec in SCHEMA.items()}
    top = {f.name: _field(f.name, f, raw.get(f.name, MISSING), issues) for f in TOP_LEVEL}

    if not issues:
        _cross_checks(values, issues)
    if issues:
        raise ConfigError(issues)

    for section, name in PATH_FIELDS:
        if (section, name) != ("model", "path"):
            values[section][name] = _resolve(values[section][name], base)
    # model.path stays as written when downloads are allowed and it is no local path (then it is a hub id).
    model_path = values["model"]["path"]
    local = _resolve(model_path, base)
    if not values["model"]["allow_download"] or Path(local).exists() or model_path.startswith((".", "/", "~")):
        values["model"]["path"] = local
    out_dir = values["train"]["output_dir"]
    values["checkpoint"]["dir"] = values["checkpoint"]["dir"] or str(Path(out_dir) / "checkpoints")
    values["progress"]["status_file"] = values["progress"]["status_file"] or str(Path(out_dir) / "status.json")
    values["progress"]["metrics_file"] = values["progress"]["metrics_file"] or str(Path(out_dir) / "metrics.jsonl")
    values["progress"]["tensorboard_dir"] = values["progress"]["tensorboard_dir"] or str(Path(out_dir) / "tensorboard")
    sections = {name: _SECTION_TYPES[name](**vals) for name, vals in values.items()}
    return Config(**sections, stack_id=top["stack_id"], source=source)


def _section(section: str, spec: tuple[Field, ...], given: Any, issues: list[Issue]) -> dict[str, Any]:
    if given is MISSING or given is None:
        if section in REQUIRED_SECTIONS:
            issues.append(Issue(section, MISSING, f"a mapping with at least: {_required(spec)}"))
        given = {}
    if not isinstance(given, dict):
        issues.append(Issue(section, given, f"a mapping of the fields {', '.join(f.name for f in spec)}"))
        given = {}
    names = [f.name for f in spec]
    for key in given:
        if key not in names:
            issues.append(_unknown(f"{section}.{key}", given[key], names))
    return {f.name: _field(f"{section}.{f.name}", f, given.get(f.name, MISSING), issues) for f in spec}


def _required(spec: tuple[Field, ...]) -> str:
    return ", ".join(f.name for f in spec if f.default is MISSING)


def _field(name: str, f: Field, value: Any, issues: list[Issue]) -> Any:
    if value is MISSING:
        if f.default is MISSING:
            issues.append(Issue(name, MISSING, f.kind.expected))
            return None
        return f.default
    try:
        return f.kind.convert(value)
    except _Bad:
        issues.append(Issue(name, value, f.kind.expected))
        return None


def _cross_checks(v: dict[str, dict[str, Any]], issues: list[Issue]) -> None:
    t = v["train"]
    if t["global_batch_size"] is not None:
        if t["gradient_accumulation_steps"] != 1:
            issues.append(
                Issue(
                    "train.gradient_accumulation_steps",
                    t["gradient_accumulation_steps"],
                    "1 (the default) when train.global_batch_size is set: the accumulation is derived from it",
                )
            )
        if isinstance(t["batch_size"], int) and t["global_batch_size"] % t["batch_size"]:
            issues.append(
                Issue(
                    "train.global_batch_size",
                    t["global_batch_size"],
                    f"a multiple of train.batch_size ({t['batch_size']})",
                )
            )
    if t["backend"] == "unsloth":
        if t["device"] == "cpu":
            issues.append(Issue("train.device", "cpu", '"auto" or "cuda" with train.backend "unsloth" (needs CUDA)'))
        if t["dtype"] == "float32":
            issues.append(Issue("train.dtype", "float32", '"auto" or "bfloat16" with train.backend "unsloth"'))


def _duplicate_key_loader():
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def construct_mapping(loader, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, _value_node in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {show(key)} (first at line {seen[key] + 1})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line
        return loader.construct_mapping_original(node, deep=deep)

    Loader.construct_mapping_original = yaml.SafeLoader.construct_mapping  # type: ignore[attr-defined]
    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return Loader


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML text; syntax errors and duplicate keys become a ConfigError naming the line."""
    try:
        import yaml
    except ImportError:
        raise ConfigError(
            [Issue("(config file)", source, "PyYAML to be importable (it comes with transformers' stack)")]
        ) from None
    try:
        return yaml.load(text, Loader=_duplicate_key_loader())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError([Issue(f"(config file {source}{where})", problem, "valid YAML")]) from None


def load(path: str | Path) -> Config:
    """Read, parse and validate the config file at path (relative paths in it resolve against its directory)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Issue("--config", str(path), "an existing YAML file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Issue("--config", str(path), f"a readable UTF-8 YAML file ({exc})")]) from None
    raw = parse_yaml(text, str(path))
    return from_dict(raw, base_dir=path.resolve().parent, source=str(path))


def check_paths(cfg: Config) -> None:
    """What the schema cannot see: the model, data and template exist; the output directories are writable.
    Creates the output directories. Raises ConfigError with every issue."""
    issues: list[Issue] = []
    model = Path(cfg.model.path)
    if model.is_dir():
        if not (model / "config.json").is_file():
            issues.append(Issue("model.path", cfg.model.path, "a model directory holding config.json (none there)"))
    elif not cfg.model.allow_download:
        issues.append(
            Issue(
                "model.path",
                cfg.model.path,
                "the directory of a locally staged model (not found; hub downloads need model.allow_download: true)",
            )
        )
    elif not re.fullmatch(r"[\w.-]+/[\w.-]+", cfg.model.path):
        issues.append(Issue("model.path", cfg.model.path, "a local directory or a hub id of the form owner/name"))
    if not Path(cfg.data.path).is_file():
        issues.append(Issue("data.path", cfg.data.path, "an existing JSONL file (not found)"))
    if cfg.model.chat_template and not Path(cfg.model.chat_template).is_file():
        issues.append(Issue("model.chat_template", cfg.model.chat_template, "an existing Jinja file (not found)"))
    for name, directory in (
        ("train.output_dir", cfg.train.output_dir),
        ("checkpoint.dir", cfg.checkpoint.dir),
        ("progress.status_file", str(Path(cfg.progress.status_file).parent)),
        ("progress.metrics_file", str(Path(cfg.progress.metrics_file).parent)),
    ):
        problem = _writable_dir(Path(directory))
        if problem:
            value = getattr(cfg.progress, name.split(".")[1]) if name.startswith("progress.") else directory
            issues.append(Issue(name, value, f"a location the trainer can create and write to ({problem})"))
    if issues:
        raise ConfigError(issues)


def _writable_dir(directory: Path) -> str | None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-test-"):
            pass
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    return None


def defaults_yaml() -> str:
    """Every field with its default, as a YAML document (`--print-defaults`)."""
    lines = ["# h100fleet trainer config: every field with its default (model.path and data.path are required)"]
    top = TOP_LEVEL[0]
    lines.append(f"{top.name}: null  # {top.doc}")
    for section, spec in SCHEMA.items():
        lines.append(f"{section}:")
        for f in spec:
            if f.default is MISSING:
                value = "REQUIRED"
            elif isinstance(f.default, tuple):
                value = "[" + ", ".join(f.default) + "]"
            else:
                value = show(f.default)
            comment = f"  # {f.doc}" if f.doc else ""
            lines.append(f"  {f.name}: {value}{comment}")
    return "\n".join(lines) + "\n"

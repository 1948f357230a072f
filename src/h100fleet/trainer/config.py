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

import difflib
import json
import math
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int(minimum: int) -> Kind:
    def convert(v: Any) -> int:
        if not _is_int(v) or v < minimum:
            raise _Bad
        return v

    text = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    return Kind(text, convert)


def _float(low: float, high: float | None, *, low_open: bool, high_open: bool = False, text: str) -> Kind:
    # PyYAML reads 2e-4 (no dot) as a string: accept numeric strings for float fields.
    def convert(v: Any) -> float:
        if isinstance(v, bool):
            raise _Bad
        if isinstance(v, str):
            try:
                v = float(v)
            except ValueError:
                raise _Bad from None
        if not isinstance(v, (int, float)) or math.isnan(v):
            raise _Bad
        v = float(v)
        if v < low or (low_open and v == low):
            raise _Bad
        if high is not None and (v > high or (high_open and v == high)):
            raise _Bad
        return v

    return Kind(text, convert)


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


def _path(text: str) -> Kind:
    def convert(v: Any) -> str:
        if not isinstance(v, str) or not v.strip() or "\0" in v:
            raise _Bad
        return v

    return Kind(text, convert)


def _optional(kind: Kind) -> Kind:
    def convert(v: Any) -> Any:
        return None if v is None else kind.convert(v)

    return Kind(kind.expected + " or null", convert)


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


# --- the schema -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    name: str
    kind: Kind
    default: Any = MISSING  # MISSING: required
    doc: str = ""


SCHEMA: dict[str, tuple[Field, ...]] = {
    "model": (
        Field(
            "path",
            _path("the directory of a locally staged model (config.json, tokenizer, weights)"),
            doc="local model directory (a hub id only with allow_download: true)",
        ),
        Field("allow_download", _bool(), False, "allow fetching model.path from the Hugging Face hub at run time"),
        Field(
            "chat_template",
            _optional(_path("the path of a Jinja chat template file")),
            None,
            "a Jinja file that replaces the tokenizer's chat template",
        ),
    ),
    "data": (
        Field("path", _path("the path of a JSONL training file"), doc="JSONL, one record a line"),
        Field("format", _choice("auto", "messages", "prompt_response"), "auto", "record format; auto: per record"),
        Field("max_seq_length", _int(16), 2048, "tokens per training sequence"),
        Field("packing", _bool(), True, "pack examples into full sequences (else pad each to max_seq_length)"),
        Field("loss_on", _choice("assistant", "all"), "assistant", "tokens that carry loss"),
        Field("shuffle", _bool(), True, "shuffle each epoch (deterministic from the seed)"),
        Field("seed", _optional(_int(0)), None, "shuffling seed; null: train.seed"),
        Field("cache", _bool(), True, "keep the tokenized sequences in <output_dir>/data-cache for the next start"),
    ),
    "lora": (
        Field("r", _int(1), 64, "LoRA rank"),
        Field(
            "alpha",
            _float(0.0, None, low_open=True, text="a positive number"),
            16.0,
            "LoRA alpha (scale = alpha / r)",
        ),
        Field(
            "dropout",
            _float(0.0, 1.0, low_open=False, high_open=True, text="a number in [0, 1)"),
            0.0,
            "LoRA dropout; 0 keeps Unsloth's fast LoRA kernels",
        ),
        Field("target_modules", _modules(), DEFAULT_TARGET_MODULES, "modules that get adapters"),
    ),
    "train": (
        Field("backend", _choice("auto", "unsloth", "hf"), "auto", "auto: unsloth where CUDA is available, else hf"),
        Field("device", _choice("auto", "cuda", "cpu"), "auto", "auto: cuda when available"),
        Field("dtype", _choice("auto", "bfloat16", "float32"), "auto", "auto: bfloat16 on CUDA, float32 on CPU"),
        Field("output_dir", _path("a directory the trainer can create and write to"), DEFAULT_OUTPUT_DIR),
        Field("epochs", _float(0.0, None, low_open=True, text="a positive number"), 1.0, "passes over the data"),
        Field("max_steps", _optional(_int(1)), None, "optimizer steps; null: from epochs"),
        Field("batch_size", _or_auto(_int(1)), "auto", "micro-batch (sequences per forward pass)"),
        Field("global_batch_size", _optional(_int(1)), None, "sequences per optimizer step; sets the accumulation"),
        Field("gradient_accumulation_steps", _int(1), 1, "micro-batches per optimizer step"),
        Field("gradient_checkpointing", _or_auto(_bool()), "auto", "recompute activations in backward"),
        Field("auto_max_batch_size", _int(1), 16, "largest micro-batch the automatic choice considers"),
        Field(
            "auto_memory_fraction",
            _float(0.0, 1.0, low_open=True, text="a number in (0, 1]"),
            0.9,
            "share of GPU memory the automatic choice may plan to use",
        ),
        Field("learning_rate", _float(0.0, None, low_open=True, text="a positive number"), 2e-4, "AdamW learning rate"),
        Field("lr_scheduler", _choice("linear", "cosine", "constant"), "linear", "decay after warm-up"),
        Field("warmup_steps", _int(0), 10, "linear warm-up steps"),
        Field("weight_decay", _float(0.0, None, low_open=False, text="a number >= 0"), 0.0, "AdamW weight decay"),
        Field(
            "max_grad_norm",
            _optional(_float(0.0, None, low_open=True, text="a positive number")),
            1.0,
            "gradient clipping; null: none",
        ),
        Field("seed", _int(0), 3407, "seed of LoRA init, dropout and shuffling"),
    ),
    "checkpoint": (
        Field("every_steps", _int(1), 100, "optimizer steps between checkpoints"),
        Field("keep_last", _int(1), 3, "checkpoints kept"),
        Field("dir", _optional(_path("a directory path")), None, "null: <output_dir>/checkpoints"),
    ),
    "progress": (
        Field(
            "every_steps",
            _int(1),
            10,
            "optimizer steps between status/log/TensorBoard updates (and after the first step of a start)",
        ),
        Field("status_file", _optional(_path("a file path")), None, "null: <output_dir>/status.json"),
        Field("metrics_file", _optional(_path("a file path")), None, "null: <output_dir>/metrics.jsonl"),
        Field("tensorboard", _bool(), True, "write TensorBoard event files when tensorboard is importable"),
        Field("tensorboard_dir", _optional(_path("a directory path")), None, "null: <output_dir>/tensorboard"),
    ),
}
TOP_LEVEL: tuple[Field, ...] = (
    Field(
        "stack_id",
        _optional(_text(r"[A-Za-z0-9._+-]+", "a stack id of letters, digits, '.', '_', '+', '-'")),
        None,
        f"shown in status and checkpoints; null: ${STACK_ID_ENV}, else unknown",
    ),
)
REQUIRED_SECTIONS = ("model", "data")
PATH_FIELDS = {
    ("model", "chat_template"),
    ("data", "path"),
    ("train", "output_dir"),
    ("checkpoint", "dir"),
    ("progress", "status_file"),
    ("progress", "metrics_file"),
    ("progress", "tensorboard_dir"),
}


# --- the validated config -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelConfig:
    path: str
    allow_download: bool
    chat_template: str | None


@dataclass(frozen=True)
class DataConfig:
    path: str
    format: str
    max_seq_length: int
    packing: bool
    loss_on: str
    shuffle: bool
    seed: int | None
    cache: bool


@dataclass(frozen=True)
class LoraConfig:
    r: int
    alpha: float
    dropout: float
    target_modules: tuple[str, ...]


@dataclass(frozen=True)
class TrainConfig:
    backend: str
    device: str
    dtype: str
    output_dir: str
    epochs: float
    max_steps: int | None
    batch_size: int | str
    global_batch_size: int | None
    gradient_accumulation_steps: int
    gradient_checkpointing: bool | str
    auto_max_batch_size: int
    auto_memory_fraction: float
    learning_rate: float
    lr_scheduler: str
    warmup_steps: int
    weight_decay: float
    max_grad_norm: float | None
    seed: int


@dataclass(frozen=True)
class CheckpointConfig:
    every_steps: int
    keep_last: int
    dir: str


@dataclass(frozen=True)
class ProgressConfig:
    every_steps: int
    status_file: str
    metrics_file: str
    tensorboard: bool
    tensorboard_dir: str


@dataclass(frozen=True)
class Config:
    model: ModelConfig
    data: DataConfig
    lora: LoraConfig
    train: TrainConfig
    checkpoint: CheckpointConfig
    progress: ProgressConfig
    stack_id: str | None
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


_SECTION_TYPES = {
    "model": ModelConfig,
    "data": DataConfig,
    "lora": LoraConfig,
    "train": TrainConfig,
    "checkpoint": CheckpointConfig,
    "progress": ProgressConfig,
}


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

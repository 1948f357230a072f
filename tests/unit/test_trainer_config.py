"""The trainer's config: defaults, every kind of error message (field, value, expectation), path checks and the
command line's exit codes. No torch needed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from h100fleet.trainer import config, exitcodes
from h100fleet.trainer.config import ConfigError, from_dict

REPO = Path(__file__).resolve().parents[2]
MINIMAL = {"model": {"path": "/srv/model"}, "data": {"path": "/srv/data.jsonl"}}
MODULES = "a non-empty list of distinct module names (e.g. [q_proj, k_proj, v_proj, o_proj])"
LR = "a number in [1e-08, 0.1] (AdamW on LoRA weights: typically 1e-5 to 1e-3)"
MODEL_DIR = "the directory of a locally staged model (config.json, tokenizer, weights)"


def errors(doc) -> list[str]:
    with pytest.raises(ConfigError) as info:
        from_dict(doc, base_dir="/etc/h100fleet")
    return [str(i) for i in info.value.issues]


def with_(section: str, **fields):
    doc = {k: dict(v) for k, v in MINIMAL.items()}
    doc.setdefault(section, {}).update(fields)
    return doc


def test_defaults_are_the_documented_ones():
    cfg = from_dict(MINIMAL, base_dir="/etc/h100fleet")
    assert cfg.data.max_seq_length == 2048
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout) == (64, 16.0, 0.0)
    assert cfg.lora.target_modules == ("q_proj", "k_proj", "v_proj", "o_proj")
    assert (cfg.train.backend, cfg.train.device, cfg.train.dtype) == ("auto", "auto", "auto")
    assert (cfg.train.batch_size, cfg.train.gradient_checkpointing) == ("auto", "auto")
    assert cfg.train.gradient_accumulation_steps == 1 and cfg.train.global_batch_size is None
    assert (cfg.train.learning_rate, cfg.train.lr_scheduler, cfg.train.warmup_steps) == (2e-4, "linear", 10)
    assert (cfg.train.epochs, cfg.train.max_steps, cfg.train.seed) == (1.0, None, 3407)
    assert (cfg.checkpoint.every_steps, cfg.checkpoint.keep_last) == (100, 3)
    assert (cfg.progress.every_steps, cfg.progress.tensorboard) == (10, True)
    assert cfg.model.allow_download is False
    assert (cfg.data.packing, cfg.data.loss_on, cfg.data.shuffle, cfg.data.format) == (True, "assistant", True, "auto")
    out = "/var/lib/h100fleet/trainer"
    assert cfg.train.output_dir == out
    assert cfg.checkpoint.dir == f"{out}/checkpoints"
    assert cfg.progress.status_file == f"{out}/status.json"
    assert cfg.progress.metrics_file == f"{out}/metrics.jsonl"
    assert cfg.progress.tensorboard_dir == f"{out}/tensorboard"
    assert cfg.data_seed == 3407


def test_relative_paths_resolve_against_the_config_directory():
    doc = {"model": {"path": "models/llama"}, "data": {"path": "train.jsonl"}, "train": {"output_dir": "run"}}
    cfg = from_dict(doc, base_dir="/etc/h100fleet")
    assert cfg.model.path == "/etc/h100fleet/models/llama"
    assert cfg.data.path == "/etc/h100fleet/train.jsonl"
    assert cfg.checkpoint.dir == "/etc/h100fleet/run/checkpoints"


def test_a_hub_id_stays_as_written_only_when_downloads_are_allowed():
    doc = with_("model", path="meta-llama/Llama-3.1-8B-Instruct", allow_download=True)
    assert from_dict(doc, base_dir="/nonexistent").model.path == "meta-llama/Llama-3.1-8B-Instruct"
    doc = with_("model", path="meta-llama/Llama-3.1-8B-Instruct")
    assert from_dict(doc, base_dir="/etc/x").model.path == "/etc/x/meta-llama/Llama-3.1-8B-Instruct"


@pytest.mark.parametrize(
    ("section", "fields", "message"),
    [
        ("train", {"batch_size": 0}, 'train.batch_size = 0: expected a positive integer or "auto"'),
        ("train", {"batch_size": "big"}, 'train.batch_size = "big": expected a positive integer or "auto"'),
        ("train", {"gradient_checkpointing": "yes"},
         'train.gradient_checkpointing = "yes": expected true or false or "auto"'),
        ("lora", {"r": True}, "lora.r = true: expected a positive integer"),
        ("lora", {"r": 1.5}, "lora.r = 1.5: expected a positive integer"),
        ("lora", {"dropout": 1.0}, "lora.dropout = 1.0: expected a number in [0, 1)"),
        ("lora", {"alpha": 0}, "lora.alpha = 0: expected a number in (0, 4096]"),
        ("lora", {"target_modules": []}, f"lora.target_modules = []: expected {MODULES}"),
        ("lora", {"target_modules": ["q_proj", "q_proj"]},
         f'lora.target_modules = ["q_proj", "q_proj"]: expected {MODULES}'),
        ("data", {"max_seq_length": 8}, "data.max_seq_length = 8: expected an integer >= 16"),
        ("data", {"format": "sharegpt"},
         'data.format = "sharegpt": expected one of "auto", "messages", "prompt_response"'),
        ("data", {"packing": "true"}, 'data.packing = "true": expected true or false'),
        ("train", {"backend": "vllm"}, 'train.backend = "vllm": expected one of "auto", "unsloth", "hf"'),
        ("train", {"learning_rate": "fast"}, f'train.learning_rate = "fast": expected {LR}'),
        ("train", {"learning_rate": -1e-4}, f"train.learning_rate = -0.0001: expected {LR}"),
        # A slip of the exponent sign, as written in YAML (a string) and as a number.
        ("train", {"learning_rate": "2e4"}, f'train.learning_rate = "2e4": expected {LR}'),
        ("train", {"learning_rate": 2e4}, f"train.learning_rate = 20000.0: expected {LR}"),
        ("train", {"learning_rate": 2e-14}, f"train.learning_rate = 2e-14: expected {LR}"),
        ("train", {"learning_rate": float("nan")}, f"train.learning_rate = NaN: expected {LR}"),
        ("train", {"epochs": 3e3}, "train.epochs = 3000.0: expected a number in (0, 1000]"),
        ("train", {"weight_decay": 10}, "train.weight_decay = 10: expected a number in [0, 1]"),
        ("train", {"max_grad_norm": 1e6}, "train.max_grad_norm = 1000000.0: expected a number in (0, 1000] or null"),
        ("lora", {"alpha": 1.6e5}, "lora.alpha = 160000.0: expected a number in (0, 4096]"),
        ("lora", {"dropout": -0.1}, "lora.dropout = -0.1: expected a number in [0, 1)"),
        ("train", {"auto_memory_fraction": 1.5}, "train.auto_memory_fraction = 1.5: expected a number in (0, 1]"),
        ("train", {"max_steps": 0}, "train.max_steps = 0: expected a positive integer or null"),
        ("train", {"warmup_steps": -1}, "train.warmup_steps = -1: expected an integer >= 0"),
        ("checkpoint", {"keep_last": 0}, "checkpoint.keep_last = 0: expected a positive integer"),
        ("progress", {"tensorboard": 1}, "progress.tensorboard = 1: expected true or false"),
        ("model", {"allow_download": "no"}, 'model.allow_download = "no": expected true or false'),
        ("model", {"path": ""}, f'model.path = "": expected {MODEL_DIR}'),
    ],
)  # fmt: skip
def test_each_bad_value_names_field_value_and_expectation(section, fields, message):
    assert errors(with_(section, **fields)) == [message]


def test_missing_required_fields_and_sections():
    assert errors({"model": {}, "data": {"path": "/d"}}) == [
        "model.path is missing: expected the directory of a locally staged model (config.json, tokenizer, weights)"
    ]
    assert errors({"data": {"path": "/d"}}) == [
        "model is missing: expected a mapping with at least: path",
        "model.path is missing: expected the directory of a locally staged model (config.json, tokenizer, weights)",
    ]
    assert errors({"model": {"path": "/m"}, "data": "train.jsonl"})[0] == (
        'data = "train.jsonl": expected a mapping of the fields path, format, max_seq_length, packing, loss_on, '
        "shuffle, seed, cache"
    )
    assert errors(["model"]) == [
        '(top level) = ["model"]: expected a mapping with the sections model, data, lora, train, ...'
    ]


def test_unknown_fields_are_named_with_a_suggestion():
    assert errors(with_("train", batchsize=4)) == [
        "train.batchsize = 4: expected a known field (one of: backend, device, dtype, output_dir, epochs, "
        "max_steps, batch_size, global_batch_size, gradient_accumulation_steps, gradient_checkpointing, "
        "auto_max_batch_size, auto_memory_fraction, learning_rate, lr_scheduler, warmup_steps, weight_decay, "
        "max_grad_norm, seed, collective_timeout_s; did you mean batch_size?)"
    ]
    assert errors({**MINIMAL, "lorra": {"r": 8}}) == [
        'lorra = {"r": 8}: expected a known field (one of: checkpoint, data, lora, model, progress, stack_id, '
        "train; did you mean lora?)"
    ]


def test_every_problem_is_reported_at_once():
    doc = {"model": {"path": "/m", "allow_download": 1}, "data": {"path": "/d", "max_seq_length": 0}, "lora": {"r": 0}}
    assert errors(doc) == [
        "model.allow_download = 1: expected true or false",
        "data.max_seq_length = 0: expected an integer >= 16",
        "lora.r = 0: expected a positive integer",
    ]


def test_numbers_that_yaml_reads_as_strings_are_accepted():
    cfg = from_dict(with_("train", learning_rate="2e-4", weight_decay="0"), base_dir="/")
    assert cfg.train.learning_rate == 2e-4 and cfg.train.weight_decay == 0.0


def test_cross_field_rules():
    assert errors(with_("train", global_batch_size=16, gradient_accumulation_steps=4)) == [
        "train.gradient_accumulation_steps = 4: expected 1 (the default) when train.global_batch_size is set: the "
        "accumulation is derived from it"
    ]
    assert errors(with_("train", global_batch_size=10, batch_size=4)) == [
        "train.global_batch_size = 10: expected a multiple of train.batch_size (4)"
    ]
    assert errors(with_("train", backend="unsloth", device="cpu")) == [
        'train.device = "cpu": expected "auto" or "cuda" with train.backend "unsloth" (needs CUDA)'
    ]
    assert errors(with_("train", backend="unsloth", dtype="float32")) == [
        'train.dtype = "float32": expected "auto" or "bfloat16" with train.backend "unsloth"'
    ]


def test_stack_id_from_config_then_environment():
    assert from_dict({**MINIMAL, "stack_id": "torch2.11-x"}).resolved_stack_id({config.STACK_ID_ENV: "env"}) == (
        "torch2.11-x"
    )
    assert from_dict(MINIMAL).resolved_stack_id({config.STACK_ID_ENV: "torch2.3-y"}) == "torch2.3-y"
    assert from_dict(MINIMAL).resolved_stack_id({}) == "unknown"
    assert errors({**MINIMAL, "stack_id": "a b"}) == [
        "stack_id = \"a b\": expected a stack id of letters, digits, '.', '_', '+', '-' or null"
    ]


def test_yaml_problems_name_the_line(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("model:\n  path: /m\n data: x\n")
    with pytest.raises(ConfigError) as info:
        config.load(bad)
    assert str(info.value).startswith(f"(config file {bad} at line 3, column 2) = ")
    assert str(info.value).endswith(": expected valid YAML")
    dup = tmp_path / "dup.yml"
    dup.write_text("model:\n  path: /a\n  path: /b\ndata:\n  path: /d\n")
    with pytest.raises(ConfigError) as info:
        config.load(dup)
    assert str(info.value) == (
        f'(config file {dup} at line 3, column 3) = "duplicate key \\"path\\" (first at line 2)": expected valid YAML'
    )
    with pytest.raises(ConfigError) as info:
        config.load(tmp_path / "none.yml")
    assert str(info.value) == f'--config = "{tmp_path}/none.yml": expected an existing YAML file'


def test_check_paths(tmp_path):
    cfg = from_dict(
        {"model": {"path": "model"}, "data": {"path": "data.jsonl"}, "train": {"output_dir": "out"}},
        base_dir=tmp_path,
    )
    with pytest.raises(ConfigError) as info:
        config.check_paths(cfg)
    assert [str(i) for i in info.value.issues] == [
        f'model.path = "{tmp_path}/model": expected the directory of a locally staged model (not found; hub '
        "downloads need model.allow_download: true)",
        f'data.path = "{tmp_path}/data.jsonl": expected an existing JSONL file (not found)',
    ]
    (tmp_path / "model").mkdir()
    (tmp_path / "data.jsonl").write_text("{}\n")
    with pytest.raises(ConfigError) as info:
        config.check_paths(cfg)
    assert [str(i) for i in info.value.issues] == [
        f'model.path = "{tmp_path}/model": expected a model directory holding config.json (none there)'
    ]
    (tmp_path / "model" / "config.json").write_text("{}")
    config.check_paths(cfg)
    assert (tmp_path / "out" / "checkpoints").is_dir()

    blocked = from_dict(
        {"model": {"path": "model"}, "data": {"path": "data.jsonl"}, "train": {"output_dir": "data.jsonl/out"}},
        base_dir=tmp_path,
    )
    with pytest.raises(ConfigError) as info:
        config.check_paths(blocked)
    first = str(info.value.issues[0])
    assert first.startswith(f'train.output_dir = "{tmp_path}/data.jsonl/out": expected a location the trainer can')
    assert "NotADirectoryError" in first or "FileExistsError" in first


def test_print_defaults_is_a_valid_config_once_the_required_fields_are_filled():
    text = config.defaults_yaml().replace("REQUIRED", "/x")
    cfg = from_dict(yaml.safe_load(text), base_dir="/")
    assert cfg == from_dict(MINIMAL | {"model": {"path": "/x"}, "data": {"path": "/x"}}, base_dir="/")


def test_no_restart_exit_codes():
    assert exitcodes.NO_RESTART == (64, 65, 78)
    assert exitcodes.EX_CONFIG == 78 and exitcodes.EX_DATAERR == 65 and exitcodes.EX_FAILURE == 1


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    env.pop("JOURNAL_STREAM", None)
    return subprocess.run(
        [sys.executable, "-m", "h100fleet.trainer", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        check=False,
    )


def test_cli_invalid_config_exits_78_with_one_line_per_problem(tmp_path):
    path = tmp_path / "trainer.yml"
    path.write_text(yaml.safe_dump({"model": {"path": "/m"}, "data": {"path": "/d"}, "lora": {"r": 0, "alpha": -1}}))
    result = cli("--config", str(path))
    assert result.returncode == 78
    lines = result.stderr.strip().splitlines()
    assert lines[0].endswith(
        f"ERROR h100fleet.trainer: config error in {path}: lora.r = 0: expected a positive integer"
    )
    assert lines[1].endswith(f"config error in {path}: lora.alpha = -1: expected a number in (0, 4096]")
    assert lines[2].endswith("ERROR h100fleet.trainer: invalid config: exit 78 (not restarted)")
    assert cli("--config", str(path), "--check").returncode == 78


def test_cli_journald_lines_carry_the_priority(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "JOURNAL_STREAM": "8:1234"}
    result = subprocess.run(
        [sys.executable, "-m", "h100fleet.trainer", "--config", str(tmp_path / "missing.yml")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 78
    assert result.stderr.splitlines()[0] == (
        f'<3>h100fleet.trainer: config error in {tmp_path}/missing.yml: --config = "{tmp_path}/missing.yml": '
        "expected an existing YAML file"
    )


def test_cli_check_accepts_a_valid_config_without_touching_paths(tmp_path):
    path = tmp_path / "trainer.yml"
    path.write_text(yaml.safe_dump({**MINIMAL, "train": {"output_dir": str(tmp_path / "never")}}))
    result = cli("--config", str(path), "--check")
    assert (result.returncode, result.stdout) == (0, f"{path}: valid\n")
    assert not (tmp_path / "never").exists()


def test_cli_usage_errors_exit_64():
    result = cli("--no-such-option")
    assert result.returncode == 64
    assert "unrecognized arguments: --no-such-option" in result.stderr


def test_cli_bad_dataset_exits_65_naming_the_line_before_loading_anything(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    (tmp_path / "data.jsonl").write_text(
        '{"prompt": "a", "response": "b"}\n\n{"prompt": "a"\n{"messages": []}\n{"prompt": "a", "response": ""}\n'
    )
    path = tmp_path / "trainer.yml"
    path.write_text(
        yaml.safe_dump({"model": {"path": "model"}, "data": {"path": "data.jsonl"}, "train": {"output_dir": "out"}})
    )
    result = cli("--config", str(path))
    assert result.returncode == 65, result.stderr
    data = tmp_path / "data.jsonl"
    assert [line.split("ERROR h100fleet.trainer: ", 1)[1] for line in result.stderr.strip().splitlines()[-5:]] == [
        f"data error: {data} line 3: not valid JSON (Expecting ',' delimiter at column 15)",
        f'data error: {data} line 4: "messages" must be a non-empty list of {{"role": ..., "content": ...}} objects',
        f'data error: {data} line 5: "response" must be a non-empty string',
        "data error: 3 of 4 records are malformed",
        "malformed dataset: exit 65 (not restarted)",
    ]
    status = yaml.safe_load((tmp_path / "out" / "status.json").read_text())
    assert status["state"] == "failed"
    assert status["error"] == f"data: {data} line 3: not valid JSON (Expecting ',' delimiter at column 15)"


def test_docs_describe_every_field():
    doc = (REPO / "docs" / "trainer.md").read_text()
    for section, fields in config.SCHEMA.items():
        for f in fields:
            assert f"`{section}.{f.name}`" in doc, f"{section}.{f.name} is not in docs/trainer.md"
    assert "`stack_id`" in doc
    for code in (0, 1, 64, 65, 78):
        assert f"| {code} |" in doc

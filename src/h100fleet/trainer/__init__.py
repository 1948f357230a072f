"""The LoRA trainer that the training service runs: `python -m h100fleet.trainer --config /etc/h100fleet/trainer.yml`.

bf16 LoRA fine-tuning of a locally staged causal LM with the `unsloth` backend (default where CUDA is available) or
the `hf` backend (transformers + PEFT: the fallback, the benchmark baseline and the CPU path for tiny models), with
a training loop of its own, atomic checkpoints and resume, graceful stop on SIGTERM/SIGINT, a status file,
TensorBoard event files and journald-friendly logs. docs/trainer.md describes the config and the exit codes.

Only config validation is imported eagerly: torch, transformers, peft and unsloth are imported when training
starts, so that `--check` and the config unit tests run without them.
"""

from __future__ import annotations

from h100fleet.trainer.exitcodes import EX_CONFIG, EX_DATAERR, EX_FAILURE, EX_OK, EX_USAGE

__all__ = ["EX_CONFIG", "EX_DATAERR", "EX_FAILURE", "EX_OK", "EX_USAGE"]

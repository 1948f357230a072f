"""Model backends: load a local causal LM with LoRA adapters, and switch gradient checkpointing.

- `unsloth`: FastLanguageModel.from_pretrained(local dir, dtype=bfloat16, load_in_4bit=False,
  local_files_only) + FastLanguageModel.get_peft_model(use_gradient_checkpointing="unsloth"). Unsloth is imported
  before transformers (it patches transformers on import), so a process holds one backend only.
- `hf`: transformers AutoModelForCausalLM (SDPA attention) + PEFT; gradient checkpointing with use_reentrant=False
  and enable_input_require_grads. Runs on CPU in float32 for tiny models. LoRA weights are kept in float32 under a
  bf16 base (PEFT >= 0.12 does this itself; 0.11, the 2024-era stack, would keep them in bf16).

Both stacks are supported: torch 2.3 / transformers 4.43 / peft 0.11 and torch 2.11 / transformers 5.17 / peft 0.21.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from h100fleet.trainer import logs

log = logs.get("backend")

OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
CACHE_ENV = {
    "TRITON_CACHE_DIR": "triton",
    "TORCHINDUCTOR_CACHE_DIR": "inductor",
    "UNSLOTH_COMPILE_LOCATION": "unsloth",
    "HF_HOME": "huggingface",
}


def prepare_environment(allow_download: bool, cache_dir: str) -> None:
    """Before transformers/unsloth are imported: no hub access unless allowed, no Unsloth usage statistics, and
    compiler caches (Triton, TorchInductor, Unsloth's compiled modules) and the Hugging Face home under cache_dir
    unless the environment names them: the home directory may be read-only under systemd (ProtectHome), and
    Unsloth would otherwise write into the working directory."""
    if not allow_download:
        for name in OFFLINE_ENV:
            os.environ[name] = "1"
    for name, sub in CACHE_ENV.items():
        os.environ.setdefault(name, os.path.join(cache_dir, sub))
    os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # tqdm bars make journal noise


def quiet_progress_bars() -> None:
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except (ImportError, AttributeError):
        pass


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text.split("+", maxsplit=1)[0])[:3])


def installed_version(name: str) -> str | None:
    """The installed distribution's version, without importing it (None when it is not installed)."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def stack_versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in ("torch", "transformers", "peft", "accelerate", "unsloth", "unsloth_zoo", "tensorboard"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    backend: str
    device: Any  # torch.device
    dtype: Any  # torch.dtype
    set_gradient_checkpointing: Callable[[bool], None]
    gradient_checkpointing: bool
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def trainable(self) -> list:
        return [p for p in self.model.parameters() if p.requires_grad]

    def forward(self, batch: dict) -> Any:
        """The model's output for one batch. Unsloth's LoRA kernels multiply bf16 activations by the adapters'
        float32 weights, which works only under bf16 autocast, the way Unsloth's own trainer runs them (unsloth
        2024.8 on an H200: "expected mat1 and mat2 to have the same dtype" in fast_lora without it); the hf
        backend runs as loaded. The backward pass runs outside, as autocast requires."""
        if self.backend == "unsloth" and self.device.type == "cuda":
            import torch

            with torch.autocast("cuda", dtype=torch.bfloat16):
                return self.model(**batch)
        return self.model(**batch)


def load(cfg, backend: str, device, dtype, gradient_checkpointing: bool) -> Loaded:
    if backend == "unsloth":
        return _load_unsloth(cfg, device, dtype, gradient_checkpointing)
    return _load_hf(cfg, device, dtype, gradient_checkpointing)


def _load_unsloth(cfg, device, dtype, gradient_checkpointing: bool) -> Loaded:
    import torch
    import unsloth  # noqa: F401 - before transformers: Unsloth patches it on import
    from unsloth import FastLanguageModel

    quiet_progress_bars()
    # Under torchrun each rank loads onto its own GPU (Unsloth's default device_map fills from cuda:0).
    placement = {"device_map": {"": device.index}} if device.index else {}
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=cfg.model.path,
        max_seq_length=cfg.data.max_seq_length,
        dtype=torch.bfloat16,
        load_in_4bit=False,
        local_files_only=not cfg.model.allow_download,
        **placement,
    )
    # Always load with Unsloth's offloaded checkpointing armed: switching it off later is cheap (for_training),
    # arming it after get_peft_model would fall back to the plain transformers implementation.
    model = FastLanguageModel.get_peft_model(
        model,
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=list(cfg.lora.target_modules),
        bias="none",
        use_gradient_checkpointing="unsloth",
        random_state=cfg.train.seed,
        max_seq_length=cfg.data.max_seq_length,
    )

    def set_gc(on: bool) -> None:
        FastLanguageModel.for_training(model, use_gradient_checkpointing="unsloth" if on else False)
        loaded.gradient_checkpointing = on

    loaded = Loaded(model, tokenizer, "unsloth", device, torch.bfloat16, set_gc, True)
    set_gc(gradient_checkpointing)
    return loaded


def _load_hf(cfg, device, dtype, gradient_checkpointing: bool) -> Loaded:
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_progress_bars()
    local_only = not cfg.model.allow_download
    tokenizer = AutoTokenizer.from_pretrained(cfg.model.path, local_files_only=local_only)
    # transformers 4.56 renamed torch_dtype to dtype (5.x warns on the old name).
    dtype_kw = "dtype" if version_tuple(transformers.__version__) >= (4, 56) else "torch_dtype"
    kwargs: dict[str, Any] = {dtype_kw: dtype, "attn_implementation": "sdpa", "local_files_only": local_only}
    if device.type == "cuda":
        kwargs["device_map"] = {"": device.index or 0}
    model = AutoModelForCausalLM.from_pretrained(cfg.model.path, **kwargs)
    if device.type != "cuda":
        model.to(device)
    model.config.use_cache = False
    torch.manual_seed(cfg.train.seed)
    peft_config = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=list(cfg.lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, peft_config)
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    base = model.get_base_model()

    def set_gc(on: bool) -> None:
        if on:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            base.enable_input_require_grads()
        else:
            base.gradient_checkpointing_disable()
        loaded.gradient_checkpointing = on

    loaded = Loaded(model, tokenizer, "hf", device, dtype, set_gc, False)
    set_gc(gradient_checkpointing)
    model.train()
    return loaded


# --- adapter weights ------------------------------------------------------------------------------------------------

ADAPTER_FILE = "adapter_model.safetensors"


def save_adapter(model, directory) -> None:
    """The LoRA weights (PEFT's saved form, loadable by PeftModel.from_pretrained) and adapter_config.json."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    state = {
        k: v.detach().contiguous().cpu()
        for k, v in get_peft_model_state_dict(model, save_embedding_layers=False).items()
    }
    save_file(state, os.path.join(directory, ADAPTER_FILE), metadata={"format": "pt"})
    model.peft_config["default"].save_pretrained(str(directory))


def load_adapter(model, directory) -> None:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = load_file(os.path.join(directory, ADAPTER_FILE))
    result = set_peft_model_state_dict(model, state)
    unexpected = getattr(result, "unexpected_keys", None) or []
    if unexpected:
        raise RuntimeError(f"adapter in {directory} does not match the model: unexpected keys {unexpected[:3]}")

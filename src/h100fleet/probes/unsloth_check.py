"""The Unsloth probe: can this node's stack fine-tune a Llama with Unsloth, end to end?

Builds a small Llama (random weights, a word-level tokenizer) in a local directory, loads it with
FastLanguageModel in bf16 without 4-bit quantisation, adds LoRA adapters and runs a few optimizer steps on one
fixed batch. It passes when the gradients are finite and non-zero and the loss goes down. Nothing is downloaded.

Run in its own process (`python -m h100fleet.probes.unsloth_check --workdir DIR`): Unsloth patches transformers
when it is imported and changes process-wide settings, which must not leak into the other probes. Prints one
JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import traceback
from pathlib import Path

VOCAB = 512
TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"]


def build_tiny_llama(directory: Path, seed: int = 0) -> Path:
    """A 2-layer Llama with grouped-query attention and its tokenizer, saved as safetensors in directory."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    vocab = {tok: i for i, tok in enumerate(specials + [f"w{i}" for i in range(VOCAB - len(specials))])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
        torch_dtype="bfloat16",
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def run(workdir: Path, steps: int = 8, seq: int = 128, batch: int = 2, lr: float = 5e-3) -> dict:
    started = time.monotonic()
    import torch
    import unsloth  # first: Unsloth patches transformers on import
    from unsloth import FastLanguageModel

    model_dir = build_tiny_llama(workdir / "tiny-llama")
    model, _tokenizer = FastLanguageModel.from_pretrained(
        model_name=str(model_dir),
        max_seq_length=seq,
        dtype=torch.bfloat16,
        load_in_4bit=False,
        local_files_only=True,
    )
    model = FastLanguageModel.get_peft_model(
        model,
        r=8,
        lora_alpha=16,
        lora_dropout=0,
        target_modules=TARGET_MODULES,
        use_gradient_checkpointing="unsloth",
        random_state=0,
        max_seq_length=seq,  # Unsloth 2024.8 asserts it is <= the loaded model's (its default is 2048)
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(4, VOCAB, (batch, seq), generator=generator).to(model.device)
    losses, grad_norms, finite = [], [], True
    model.train()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        # Under bf16 autocast, as transformers' Trainer runs it: Unsloth 2024.8's LoRA kernels multiply the bf16
        # activations with the adapters' float32 weights and fail outside autocast (newer releases cast).
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        grads = [p.grad for p in params if p.grad is not None]
        finite = finite and all(bool(torch.isfinite(g).all()) for g in grads)
        grad_norms.append(math.sqrt(sum(float(g.float().pow(2).sum()) for g in grads)))
        losses.append(float(loss.detach()))
        optimizer.step()
    ok = finite and grad_norms[0] > 0 and all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
    return {
        "ok": ok,
        "unsloth_version": getattr(unsloth, "__version__", "unknown"),
        "torch_version": torch.__version__,
        "trainable_parameters": sum(p.numel() for p in params),
        "losses": losses,
        "grad_norms": grad_norms,
        "grads_finite": finite,
        "seconds": time.monotonic() - started,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="where the tiny model is written (default: a temporary dir)")
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args(argv)
    try:
        if args.workdir:
            args.workdir.mkdir(parents=True, exist_ok=True)
            result = run(args.workdir, steps=args.steps)
        else:
            with tempfile.TemporaryDirectory(prefix="h100fleet-unsloth-") as tmp:
                result = run(Path(tmp), steps=args.steps)
    except Exception as exc:  # the probe reports every failure as data, never as a traceback on its caller
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=8)}
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())

"""Small local models and datasets for tests, smoke runs and benchmarks: nothing is downloaded.

build_model() writes a Llama (random weights) with a word-level tokenizer and a chat template to a directory;
write_dataset() writes JSONL records of random words in both record forms; write_config() a trainer config.
The Llama-3.1-8B architecture for the throughput benchmark is LLAMA_8B.

Node side (in the trainer, not the harness) although its users are tests and benchmarks: the molecule scenarios
and scripts/demo stage the training service's model and data on the node with the stack venv's own interpreter
(.config/molecule/tasks/tiny_model.yml), so it must be in what the venv gets.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", *ROLE_TOKENS]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)

TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
}
# The Unsloth probe's size (head_dim 64): known to run through Unsloth's kernels.
SMALL = {
    "hidden_size": 256,
    "intermediate_size": 688,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
}
LLAMA_8B = {
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 131072,
    "vocab_size": 128256,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "rope_scaling": {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
}


def words(vocab: int) -> list[str]:
    return [f"w{i}" for i in range(vocab - len(SPECIALS))]


def build_tokenizer(vocab: int = 512):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    table = {tok: i for i, tok in enumerate(SPECIALS + words(vocab))}
    tok = Tokenizer(models.WordLevel(vocab=table, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=ROLE_TOKENS,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(
    directory: str | Path,
    *,
    size: dict[str, Any] | None = None,
    vocab: int = 512,
    dtype: str = "float32",
    device: str = "cpu",
    seed: int = 0,
    tokenizer_vocab: int | None = None,
) -> Path:
    """A Llama with random weights and its tokenizer, saved (safetensors) in directory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    spec = {**(size or TINY)}
    spec.setdefault("vocab_size", vocab)
    config = LlamaConfig(**spec, bos_token_id=1, eos_token_id=2, pad_token_id=3, tie_word_embeddings=False)
    torch_dtype = getattr(torch, dtype)
    with torch.device(device):
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch_dtype)
        try:
            model = LlamaForCausalLM(config)
        finally:
            torch.set_default_dtype(previous)
    model.save_pretrained(directory, safe_serialization=True)
    build_tokenizer(tokenizer_vocab or min(vocab, spec["vocab_size"])).save_pretrained(directory)
    del model
    return directory


def write_dataset(
    path: str | Path,
    *,
    records: int = 64,
    vocab: int = 512,
    seed: int = 0,
    min_words: int = 8,
    max_words: int = 40,
    forms: tuple[str, ...] = ("messages", "prompt_response"),
) -> Path:
    """JSONL of random-word conversations, alternating between the record forms given."""
    rng = random.Random(seed)
    vocabulary = words(vocab)

    def text() -> str:
        return " ".join(rng.choice(vocabulary) for _ in range(rng.randint(min_words, max_words)))

    path = Path(path)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(records):
            if forms[i % len(forms)] == "messages":
                record: dict[str, Any] = {
                    "messages": [
                        {"role": "system", "content": text()},
                        {"role": "user", "content": text()},
                        {"role": "assistant", "content": text()},
                    ]
                }
            else:
                record = {"prompt": text(), "response": text()}
            f.write(json.dumps(record) + "\n")
    return path


def write_config(path: str | Path, doc: dict[str, Any]) -> Path:
    import yaml

    path = Path(path)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path

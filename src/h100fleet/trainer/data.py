"""The training data: JSONL records, rendered with the tokenizer's chat template, packed or padded to fixed-length
sequences, read in a deterministic order that a checkpoint can resume exactly.

Records, one JSON object a line (blank lines are skipped):

    {"messages": [{"role": "system", "content": "..."}, {"role": "user", "content": "..."},
                  {"role": "assistant", "content": "..."}]}
    {"prompt": "...", "response": "...", "system": "..."}          # "system" is optional

A bad record stops the run with DataError (exit 65) naming the file and line. Nothing here imports torch: samples
are stdlib int32 arrays that the loop turns into tensors without a copy.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IGNORE = -100  # label of tokens that carry no loss (the ignore_index of torch's cross-entropy)
ROLES = ("system", "user", "assistant", "tool")
MAX_REPORTED = 10


class DataError(Exception):
    """A malformed dataset: str() names the file and the lines."""


@dataclass(frozen=True)
class Records:
    conversations: list[list[dict[str, str]]]
    sha256: str
    lines: int


def _check_messages(messages: Any) -> str | None:
    if not isinstance(messages, list) or not messages:
        return '"messages" must be a non-empty list of {"role": ..., "content": ...} objects'
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            return f'"messages"[{i}] must be an object with "role" and "content"'
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            return f'"messages"[{i}].role = {json.dumps(role)}: expected one of {", ".join(ROLES)}'
        if not isinstance(content, str):
            return f'"messages"[{i}].content must be a string'
    if not any(m["role"] == "assistant" for m in messages):
        return '"messages" has no "assistant" message: nothing to learn from'
    return None


def parse_record(obj: Any, fmt: str) -> tuple[list[dict[str, str]] | None, str | None]:
    """(messages, None) or (None, problem) for one decoded JSON line; fmt is auto, messages or prompt_response."""
    if not isinstance(obj, dict):
        return None, 'expected a JSON object with "messages", or "prompt" and "response"'
    has_messages = "messages" in obj
    has_pair = "prompt" in obj or "response" in obj
    problem = None
    if has_messages and has_pair:
        problem = 'has both "messages" and "prompt"/"response": expected one form'
    elif fmt == "messages" and not has_messages:
        problem = 'expected "messages" (data.format is "messages")'
    elif fmt == "prompt_response" and not has_pair:
        problem = 'expected "prompt" and "response" (data.format is "prompt_response")'
    if problem:
        return None, problem
    if has_messages:
        problem = _check_messages(obj["messages"])
        return (
            (None, problem)
            if problem
            else ([{"role": m["role"], "content": m["content"]} for m in obj["messages"]], None)
        )
    if not has_pair:
        return None, 'expected "messages", or "prompt" and "response"'
    return _pair(obj)


def _pair(obj: dict[str, Any]) -> tuple[list[dict[str, str]] | None, str | None]:
    prompt, response, system = obj.get("prompt"), obj.get("response"), obj.get("system")
    for name, value in (("prompt", prompt), ("response", response)):
        if not isinstance(value, str) or not value:
            return None, f'"{name}" must be a non-empty string'
    if system is not None and not isinstance(system, str):
        return None, '"system" must be a string'
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    return messages, None


def read_jsonl(path: str | Path, fmt: str = "auto") -> Records:
    """Every record of the file, validated; DataError lists the first bad lines (by number) and how many."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    conversations: list[list[dict[str, str]]] = []
    problems: list[str] = []
    bad = 0
    lines = raw.split(b"\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except UnicodeDecodeError:
            problem = "not valid UTF-8"
        except json.JSONDecodeError as exc:
            problem = f"not valid JSON ({exc.msg} at column {exc.colno})"
        else:
            messages, problem = parse_record(obj, fmt)
            if messages is not None:
                conversations.append(messages)
                continue
        bad += 1
        if len(problems) < MAX_REPORTED:
            problems.append(f"{path} line {number}: {problem}")
    if bad:
        more = f"\n... and {bad - len(problems)} more bad lines" if bad > len(problems) else ""
        raise DataError("\n".join(problems) + more + f"\n{bad} of {len(conversations) + bad} records are malformed")
    if not conversations:
        raise DataError(f"{path}: no records (expected one JSON object a line)")
    return Records(conversations, hashlib.sha256(raw).hexdigest(), len(lines))


# --- tokenization ---------------------------------------------------------------------------------------------------


@dataclass
class EncodeStats:
    examples: int = 0
    truncated: int = 0
    dropped_no_labels: int = 0
    full_loss_fallback: int = 0  # assistant-only masking impossible (template not prefix-stable): all tokens
    tokens: int = 0


def _render(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool = False) -> str:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    if not isinstance(text, str):  # some versions return a list for a batch of one
        text = text[0]
    return text


def assistant_spans(tokenizer: Any, messages: list[dict[str, str]], text: str) -> list[tuple[int, int]] | None:
    """Character spans of text produced by the assistant turns (with their end-of-turn tokens), found by rendering
    each prefix of the conversation; None when the template is not prefix-stable."""
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        try:
            before = _render(tokenizer, messages[:i], generation_prompt=True) if i else ""
            through = _render(tokenizer, messages[: i + 1])
        except Exception:
            return None
        if not text.startswith(through) or not through.startswith(before) or len(through) == len(before):
            return None
        spans.append((len(before), len(through)))
    return spans


def encode(
    conversations: Sequence[list[dict[str, str]]],
    tokenizer: Any,
    max_seq_length: int,
    loss_on: str = "assistant",
    chunk: int = 512,
) -> tuple[list[tuple[array, array]], EncodeStats]:
    """Token ids and labels (IGNORE where no loss) of each conversation, truncated to max_seq_length."""
    stats = EncodeStats()
    examples: list[tuple[array, array]] = []
    fast = bool(getattr(tokenizer, "is_fast", False))
    for start in range(0, len(conversations), chunk):
        batch = conversations[start : start + chunk]
        texts = [_render(tokenizer, m) for m in batch]
        want_offsets = loss_on == "assistant" and fast
        enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=want_offsets)
        for j, messages in enumerate(batch):
            ids = list(enc["input_ids"][j])
            labels = list(ids)
            if loss_on == "assistant":
                spans = assistant_spans(tokenizer, messages, texts[j]) if want_offsets else None
                if spans is None:
                    stats.full_loss_fallback += 1
                else:
                    labels = _mask(ids, enc["offset_mapping"][j], spans)
            if len(ids) > max_seq_length:
                stats.truncated += 1
                ids, labels = ids[:max_seq_length], labels[:max_seq_length]
            if len(ids) < 2 or all(x == IGNORE for x in labels[1:]):
                stats.dropped_no_labels += 1
                continue
            stats.examples += 1
            stats.tokens += len(ids)
            examples.append((array("i", ids), array("i", labels)))
    return examples, stats


def _mask(ids: list[int], offsets: Sequence[Sequence[int]], spans: list[tuple[int, int]]) -> list[int]:
    labels = []
    for tok, (begin, end) in zip(ids, offsets):
        inside = end > begin and any(s <= begin < e for s, e in spans)
        labels.append(tok if inside else IGNORE)
    return labels


# --- fixed-length samples -------------------------------------------------------------------------------------------


@dataclass
class Samples:
    """n sequences of seq_len tokens, row-major in flat int32 arrays; lengths[i] = real (unpadded) tokens of row i."""

    seq_len: int
    input_ids: array
    labels: array
    lengths: array
    packed: bool
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.lengths)

    def row(self, i: int) -> tuple[array, array, int]:
        a, b = i * self.seq_len, (i + 1) * self.seq_len
        return self.input_ids[a:b], self.labels[a:b], self.lengths[i]

    @property
    def padded(self) -> bool:
        return any(x != self.seq_len for x in self.lengths)


def pack(examples: Iterable[tuple[array, array]], seq_len: int, pad_id: int) -> Samples:
    """Concatenate examples into rows of exactly seq_len tokens (the tail that does not fill a row is dropped,
    unless it is the only row, which is then padded). The first token of each example carries no loss, so that no
    token is trained to predict the start of an unrelated example."""
    ids, labels = array("i"), array("i")
    for e_ids, e_labels in examples:
        ids.extend(e_ids)
        first = array("i", e_labels)
        first[0] = IGNORE
        labels.extend(first)
    rows = len(ids) // seq_len
    dropped = len(ids) - rows * seq_len
    lengths = array("i", [seq_len] * rows)
    if rows == 0 and len(ids):
        lengths = array("i", [len(ids)])
        pad = seq_len - len(ids)
        ids.extend([pad_id] * pad)
        labels.extend([IGNORE] * pad)
        rows, dropped = 1, 0
    del ids[rows * seq_len :]
    del labels[rows * seq_len :]
    return Samples(seq_len, ids, labels, lengths, True, {"tail_tokens_dropped": dropped})


def pad(examples: Iterable[tuple[array, array]], seq_len: int, pad_id: int) -> Samples:
    """One example a row, padded with pad_id to seq_len (padding carries no loss and is masked from attention)."""
    ids, labels, lengths = array("i"), array("i"), array("i")
    for e_ids, e_labels in examples:
        n = len(e_ids)
        ids.extend(e_ids)
        ids.extend([pad_id] * (seq_len - n))
        labels.extend(e_labels)
        labels.extend([IGNORE] * (seq_len - n))
        lengths.append(n)
    return Samples(seq_len, ids, labels, lengths, False, {})


def shuffled(items: list, seed: int) -> list:
    out = list(items)
    random.Random(seed).shuffle(out)
    return out


class Order:
    """The order in which samples are read: epoch e is a permutation of range(n) seeded by (seed, e), so that
    the sample at any global position (samples consumed since the start) is known without replaying the run."""

    def __init__(self, n: int, seed: int, shuffle: bool = True):
        if n <= 0:
            raise ValueError("no samples")
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self._epoch: int | None = None
        self._perm: list[int] = []

    def permutation(self, epoch: int) -> list[int]:
        if self._epoch != epoch:
            perm = list(range(self.n))
            if self.shuffle:
                random.Random(self.seed * 1_000_003 + epoch).shuffle(perm)
            self._epoch, self._perm = epoch, perm
        return self._perm

    def indices(self, position: int, count: int) -> list[int]:
        """Sample indices at global positions position .. position + count - 1 (crossing epochs as needed)."""
        out = []
        for p in range(position, position + count):
            epoch, offset = divmod(p, self.n)
            out.append(self.permutation(epoch)[offset])
        return out


# --- the tokenized-samples cache ------------------------------------------------------------------------------------

CACHE_FORMAT = 1
CACHE_MAGIC = b"h100fleet-samples\n"


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A digest of what decides the token ids: the tokenizer's full definition where it has one (fast tokenizers:
    vocabulary, merges, normalizer, special tokens), else its vocabulary; and the chat template."""
    digest = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and hasattr(backend, "to_str"):
        digest.update(backend.to_str().encode())
    else:
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    for name in ("bos_token", "eos_token", "pad_token", "chat_template"):
        digest.update(f"\0{name}={getattr(tokenizer, name, None)}".encode())
    return digest.hexdigest()


def samples_key(records_sha256: str, tokenizer_digest: str, settings: dict[str, Any]) -> str:
    """The cache key of a set of samples: the data file's content, the tokenizer and every setting that changes the
    sequences (length, packing, loss, shuffle and its seed, pad id)."""
    doc = {"format": CACHE_FORMAT, "data": records_sha256, "tokenizer": tokenizer_digest, "settings": settings}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def save_samples(path: Path, samples: Samples, key: str) -> None:
    """Write the samples next to path and rename them into place: a reader never sees a partial file."""
    header = {
        "format": CACHE_FORMAT,
        "key": key,
        "byteorder": sys.byteorder,
        "itemsize": samples.input_ids.itemsize,
        "seq_len": samples.seq_len,
        "rows": samples.n,
        "tokens": len(samples.input_ids),
        "packed": samples.packed,
        "info": samples.info,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(CACHE_MAGIC + json.dumps(header).encode() + b"\n")
        for part in (samples.input_ids, samples.labels, samples.lengths):
            part.tofile(f)
    tmp.replace(path)


def load_samples(path: Path, key: str) -> Samples | None:
    """The cached samples of this key, or None (no file, another key, another machine's layout, or damaged)."""
    try:
        with open(path, "rb") as f:
            if f.readline() != CACHE_MAGIC:
                return None
            header = json.loads(f.readline())
            if (header.get("format"), header.get("key"), header.get("byteorder")) != (CACHE_FORMAT, key, sys.byteorder):
                return None
            parts = []
            for count in (header["tokens"], header["tokens"], header["rows"]):
                part = array("i")
                if part.itemsize != header["itemsize"]:
                    return None
                part.fromfile(f, count)
                parts.append(part)
            if f.read(1):
                return None
    except (OSError, EOFError, ValueError, KeyError, TypeError):
        return None
    ids, labels, lengths = parts
    return Samples(header["seq_len"], ids, labels, lengths, bool(header["packed"]), dict(header.get("info") or {}))

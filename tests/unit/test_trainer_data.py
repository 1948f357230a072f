"""The trainer's data handling without torch: record validation with line numbers, assistant-only loss masks,
packing and padding, and the deterministic, resumable sample order."""

from __future__ import annotations

import json
import re
from array import array

import pytest

from h100fleet.trainer import data
from h100fleet.trainer.data import IGNORE, DataError, Order, parse_record


class WordTokenizer:
    """A fast-tokenizer stand-in: one token per whitespace-separated word, with character offsets."""

    is_fast = True

    def __init__(self, template: str = "stable"):
        self.template = template
        self.vocab: dict[str, int] = {}

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        assert tokenize is False
        parts = [f"<{m['role']}> {m['content']} </{m['role']}>" for m in messages]
        if self.template == "unstable" and messages:  # a rendering that changes earlier text as turns are added
            parts[0] = f"<{len(messages)}> " + parts[0]
        text = " ".join(parts)
        if add_generation_prompt:
            text = (text + " <assistant>").strip()
        return text

    def __call__(self, texts, add_special_tokens=False, return_offsets_mapping=False):
        out = {"input_ids": [], "offset_mapping": []}
        for text in texts:
            ids, offsets = [], []
            for m in re.finditer(r"\S+", text):
                ids.append(self.vocab.setdefault(m.group(), len(self.vocab) + 10))
                offsets.append((m.start(), m.end()))
            out["input_ids"].append(ids)
            out["offset_mapping"].append(offsets)
        return out

    def words(self, ids):
        inverse = {v: k for k, v in self.vocab.items()}
        return [inverse[i] if i != IGNORE else None for i in ids]


CHAT = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "hi there"},
    {"role": "assistant", "content": "hello you"},
    {"role": "user", "content": "again"},
    {"role": "assistant", "content": "sure"},
]


def test_parse_record_forms_and_problems():
    assert parse_record({"prompt": "p", "response": "r", "system": "s"}, "auto") == (
        [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "p"},
            {"role": "assistant", "content": "r"},
        ],
        None,
    )
    assert parse_record({"messages": CHAT}, "messages") == (CHAT, None)
    cases = {
        json.dumps([1]): 'expected a JSON object with "messages", or "prompt" and "response"',
        json.dumps({"text": "x"}): 'expected "messages", or "prompt" and "response"',
        json.dumps({"messages": CHAT, "prompt": "p"}): 'has both "messages" and "prompt"/"response": expected one form',
        json.dumps({"messages": [{"role": "bot", "content": "x"}]}): (
            '"messages"[0].role = "bot": expected one of system, user, assistant, tool'
        ),
        json.dumps({"messages": [{"role": "user", "content": 3}]}): '"messages"[0].content must be a string',
        json.dumps({"messages": [{"role": "user", "content": "x"}]}): (
            '"messages" has no "assistant" message: nothing to learn from'
        ),
        json.dumps({"prompt": "p"}): '"response" must be a non-empty string',
        json.dumps({"prompt": "p", "response": "r", "system": 1}): '"system" must be a string',
    }
    for line, problem in cases.items():
        assert parse_record(json.loads(line), "auto") == (None, problem), line
    assert parse_record({"prompt": "p", "response": "r"}, "messages") == (
        None,
        'expected "messages" (data.format is "messages")',
    )
    assert parse_record({"messages": CHAT}, "prompt_response") == (
        None,
        'expected "prompt" and "response" (data.format is "prompt_response")',
    )


def test_read_jsonl_names_each_bad_line_and_counts(tmp_path):
    path = tmp_path / "d.jsonl"
    good = json.dumps({"prompt": "p", "response": "r"})
    path.write_text(f"{good}\n\n{{oops\n{good}\n[1]\n" + "\n".join(["{}"] * 12) + "\n")
    with pytest.raises(DataError) as info:
        data.read_jsonl(path)
    lines = str(info.value).splitlines()
    assert lines[0] == f"{path} line 3: not valid JSON (Expecting property name enclosed in double quotes at column 2)"
    assert lines[1] == f'{path} line 5: expected a JSON object with "messages", or "prompt" and "response"'
    assert lines[2] == f'{path} line 6: expected "messages", or "prompt" and "response"'
    assert len(lines) == data.MAX_REPORTED + 2
    assert lines[-2:] == ["... and 4 more bad lines", "14 of 16 records are malformed"]


def test_read_jsonl_reads_good_files_and_refuses_empty_ones(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"messages": CHAT}) + "\n\n" + json.dumps({"prompt": "p", "response": "r"}) + "\n")
    records = data.read_jsonl(path)
    assert len(records.conversations) == 2 and len(records.sha256) == 64
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n \n")
    with pytest.raises(DataError, match=r"e\.jsonl: no records \(expected one JSON object a line\)$"):
        data.read_jsonl(empty)
    with pytest.raises(DataError, match="cannot read"):
        data.read_jsonl(tmp_path / "missing.jsonl")


def test_loss_only_on_assistant_turns():
    tok = WordTokenizer()
    (example,), stats = data.encode([CHAT], tok, max_seq_length=100, loss_on="assistant")
    ids, labels = example
    rendered = "<system> be brief </system> <user> hi there </user> <assistant> hello you </assistant> <user> again"
    assert " ".join(tok.words(ids)) == rendered + " </user> <assistant> sure </assistant>"
    assert [w for w in tok.words(labels) if w] == ["hello", "you", "</assistant>", "sure", "</assistant>"]
    assert stats.full_loss_fallback == 0 and stats.examples == 1

    (example,), _ = data.encode([CHAT], tok, max_seq_length=100, loss_on="all")
    assert list(example[1]) == list(example[0])


def test_unstable_templates_fall_back_to_full_loss():
    tok = WordTokenizer("unstable")
    (example,), stats = data.encode([CHAT], tok, max_seq_length=100)
    assert stats.full_loss_fallback == 1
    assert list(example[1]) == list(example[0])


def test_truncation_and_examples_without_loss():
    tok = WordTokenizer()
    # 8 tokens end with the user turn: nothing labelled is left, so both examples are dropped.
    examples, stats = data.encode([CHAT, CHAT[:3]], tok, max_seq_length=8)
    assert (stats.truncated, stats.dropped_no_labels, stats.examples, examples) == (2, 2, 0, [])
    examples, stats = data.encode([CHAT[:3]], tok, max_seq_length=11)
    assert stats.truncated == 1 and [w for w in tok.words(examples[0][1]) if w] == ["hello", "you"]


def test_pack_rows_and_boundaries():
    ex = [(array("i", [1, 2, 3]), array("i", [1, 2, 3])), (array("i", [4, 5, 6, 7]), array("i", [IGNORE, 5, 6, 7]))]
    s = data.pack(ex, seq_len=3, pad_id=0)
    assert (s.n, s.packed, s.padded) == (2, True, False)
    assert list(s.input_ids) == [1, 2, 3, 4, 5, 6]
    # The first token of every example carries no loss; the tail (7) that fills no row is dropped.
    assert list(s.labels) == [IGNORE, 2, 3, IGNORE, 5, 6]
    assert s.info == {"tail_tokens_dropped": 1}
    short = data.pack(ex[:1], seq_len=5, pad_id=9)
    assert (short.n, list(short.input_ids), list(short.lengths)) == (1, [1, 2, 3, 9, 9], [3])
    assert list(short.labels) == [IGNORE, 2, 3, IGNORE, IGNORE]


def test_pad_rows():
    ex = [(array("i", [1, 2]), array("i", [IGNORE, 2])), (array("i", [3, 4, 5]), array("i", [3, 4, 5]))]
    s = data.pad(ex, seq_len=4, pad_id=0)
    assert (s.n, s.packed, s.padded, list(s.lengths)) == (2, False, True, [2, 3])
    assert list(s.input_ids) == [1, 2, 0, 0, 3, 4, 5, 0]
    assert list(s.labels) == [IGNORE, 2, IGNORE, IGNORE, 3, 4, 5, IGNORE]
    assert s.row(1) == (array("i", [3, 4, 5, 0]), array("i", [3, 4, 5, IGNORE]), 3)


def test_order_is_deterministic_resumable_and_reshuffled_each_epoch():
    a, b = Order(10, seed=7), Order(10, seed=7)
    first = a.indices(0, 25)
    assert first == b.indices(0, 25)
    # Resuming at any position gives exactly what an uninterrupted reader sees.
    assert Order(10, seed=7).indices(13, 12) == first[13:25]
    epochs = [first[0:10], first[10:20]]
    assert all(sorted(e) == list(range(10)) for e in epochs)
    assert epochs[0] != epochs[1]
    assert Order(10, seed=8).indices(0, 10) != epochs[0]
    assert Order(5, seed=7, shuffle=False).indices(3, 4) == [3, 4, 0, 1]
    with pytest.raises(ValueError, match="no samples"):
        Order(0, seed=1)


def test_shuffled_is_seeded():
    items = list(range(20))
    assert data.shuffled(items, 3) == data.shuffled(items, 3) != items
    assert data.shuffled(items, 3) != data.shuffled(items, 4)


# --- the tokenized-samples cache -------------------------------------------------------------------------------------


def _samples():
    examples = [(array("i", [5, 6, 7]), array("i", [5, 6, 7])), (array("i", [8, 9]), array("i", [-100, 9]))]
    return data.pack(examples, seq_len=4, pad_id=0)


def test_cached_samples_come_back_identical(tmp_path):
    samples = _samples()
    path = tmp_path / "cache" / "samples.bin"
    data.save_samples(path, samples, "k1")
    again = data.load_samples(path, "k1")
    assert (again.seq_len, again.input_ids, again.labels, again.lengths, again.packed, again.info) == (
        samples.seq_len,
        samples.input_ids,
        samples.labels,
        samples.lengths,
        samples.packed,
        samples.info,
    )
    assert not list(path.parent.glob(".*.tmp"))


def test_cache_of_another_key_or_a_damaged_file_is_not_used(tmp_path):
    path = tmp_path / "samples.bin"
    assert data.load_samples(path, "k1") is None  # no file
    data.save_samples(path, _samples(), "k1")
    assert data.load_samples(path, "k2") is None
    whole = path.read_bytes()
    path.write_bytes(whole[:-3])  # cut short
    assert data.load_samples(path, "k1") is None
    path.write_bytes(whole + b"x")  # trailing bytes
    assert data.load_samples(path, "k1") is None
    path.write_bytes(b"something else\n")
    assert data.load_samples(path, "k1") is None


class _Tokenizer:
    def __init__(self, vocab, template="{{ messages }}"):
        self.vocab, self.chat_template = vocab, template
        self.bos_token, self.eos_token, self.pad_token = "<s>", "</s>", None

    def get_vocab(self):
        return dict(self.vocab)


def test_the_cache_key_changes_with_the_data_the_tokenizer_and_every_setting():
    tok = data.tokenizer_fingerprint(_Tokenizer({"a": 0, "b": 1}))
    assert tok == data.tokenizer_fingerprint(_Tokenizer({"b": 1, "a": 0}))
    settings = {
        "max_seq_length": 2048,
        "packing": True,
        "loss_on": "assistant",
        "shuffle": True,
        "seed": 1,
        "pad_id": 0,
    }
    key = data.samples_key("d" * 64, tok, settings)
    assert key == data.samples_key("d" * 64, tok, dict(settings))
    others = {
        data.samples_key("e" * 64, tok, settings),
        data.samples_key("d" * 64, data.tokenizer_fingerprint(_Tokenizer({"a": 0, "b": 2})), settings),
        data.samples_key("d" * 64, data.tokenizer_fingerprint(_Tokenizer({"a": 0, "b": 1}, "other")), settings),
        *(
            data.samples_key("d" * 64, tok, {**settings, name: value})
            for name, value in [
                ("max_seq_length", 4096),
                ("packing", False),
                ("loss_on", "all"),
                ("shuffle", False),
                ("seed", 2),
                ("pad_id", 7),
            ]
        ),
    }
    assert key not in others and len(others) == 9

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiktoken
import torch

from lit_sft.data.entries import check_split_sizes, load_entries, split_entries, validate_entries
from lit_sft.data.sft import (
    EncodedEntry,
    InstructionDataModule,
    collate_instructions,
    encode_entry,
)
from lit_sft.errors import MissingFile, UserError
from lit_sft.prompts import prompt_style
from lit_sft.tokenizer import END_OF_TEXT, IGNORE_INDEX

ENTRIES = [
    {
        "instruction": "Convert to passive voice.",
        "input": "The cat ate the fish.",
        "output": "The fish was eaten by the cat.",
    },
    {"instruction": "Name a primary color.", "input": "", "output": "Red."},
    {"instruction": "What is 2 + 2?", "output": "4"},
]


@pytest.fixture(scope="module")
def tokenizer() -> tiktoken.Encoding:
    return tiktoken.get_encoding("gpt2")


def test_collate_matches_the_book_example() -> None:
    batch = [EncodedEntry([0, 1, 2, 3, 4], 1), EncodedEntry([5, 6], 1), EncodedEntry([7, 8, 9], 1)]
    out = collate_instructions(batch)
    assert out["input_ids"].tolist() == [
        [0, 1, 2, 3, 4],
        [5, 6, 50256, 50256, 50256],
        [7, 8, 9, 50256, 50256],
    ]
    assert out["targets"].tolist() == [
        [1, 2, 3, 4, 50256],
        [6, 50256, -100, -100, -100],
        [8, 9, 50256, -100, -100],
    ]


def test_collate_truncates_to_allowed_max_length() -> None:
    batch = [EncodedEntry(list(range(10)), 2), EncodedEntry([5, 6], 1)]
    out = collate_instructions(batch, allowed_max_length=4)
    assert out["input_ids"].shape == out["targets"].shape == (2, 4)
    assert out["targets"].tolist() == [[1, 2, 3, 4], [6, 50256, -100, -100]]


@pytest.mark.parametrize("style_name", ["alpaca", "phi3", "chatml"])
def test_masking_leaves_exactly_the_response_and_end_of_text(style_name, tokenizer) -> None:
    style = prompt_style(style_name)
    encoded = [encode_entry(e, style, tokenizer) for e in ENTRIES]
    out = collate_instructions(encoded, mask_instructions=True)
    for row, entry in enumerate(ENTRIES):
        kept = out["targets"][row][out["targets"][row] != IGNORE_INDEX].tolist()
        assert kept[-1] == END_OF_TEXT and END_OF_TEXT not in kept[:-1]
        assert tokenizer.decode(kept[:-1]) == entry["output"]


@pytest.mark.parametrize("style_name", ["alpaca", "phi3", "chatml"])
def test_without_masking_every_real_token_is_a_target(style_name, tokenizer) -> None:
    style = prompt_style(style_name)
    encoded = [encode_entry(e, style, tokenizer) for e in ENTRIES]
    out = collate_instructions(encoded)
    for row, (entry, item) in enumerate(zip(ENTRIES, encoded, strict=True)):
        kept = out["targets"][row][out["targets"][row] != IGNORE_INDEX].tolist()
        assert kept == item.tokens[1:] + [END_OF_TEXT]
        assert (
            tokenizer.decode(item.tokens) == style.prompt({"input": "", **entry}) + entry["output"]
        )
        start = int(out["response_start"][row])
        response_targets = out["targets"][row][start : len(item.tokens)].tolist()
        assert tokenizer.decode(response_targets) == entry["output"] + "<|endoftext|>"


def test_prompt_formats_are_the_published_ones() -> None:
    alpaca, phi3 = prompt_style("alpaca"), prompt_style("phi3")
    with_input, without = ENTRIES[0], {**ENTRIES[1]}
    assert alpaca.prompt(with_input) == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nConvert to passive voice."
        "\n\n### Input:\nThe cat ate the fish.\n\n### Response:\n"
    )
    assert alpaca.prompt(without).endswith(
        "### Instruction:\nName a primary color.\n\n### Response:\n"
    )
    assert phi3.prompt(with_input) == (
        "<|user|>\nConvert to passive voice.\nThe cat ate the fish.\n<|assistant|>:\n"
    )
    assert phi3.prompt(without) == "<|user|>\nName a primary color.\n<|assistant|>:\n"
    chatml = prompt_style("chatml")
    assert chatml.prompt(with_input) == (
        "<|im_start|>user\nConvert to passive voice.\nThe cat ate the fish.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert chatml.prompt({**without, "system": "Be brief."}) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nName a primary color."
        "<|im_end|>\n<|im_start|>assistant\n"
    )
    assert (
        chatml.extract_response("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHey")
        == "Hey"
    )


def test_unknown_prompt_style_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="alpaca, chatml, phi3"):
        prompt_style("llama3")


def test_book_dataset_splits_935_110_55(book_data: Path) -> None:
    train, test, val = split_entries(load_entries(str(book_data)))
    assert (len(train), len(test), len(val)) == (935, 110, 55)
    raw = json.loads(book_data.read_text())
    assert train[0]["instruction"] == raw[0]["instruction"]
    assert test[0]["output"] == raw[935]["output"] and val[-1]["output"] == raw[-1]["output"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('[{"instruction": "a", "input": ""}]', "entry 0 has no 'output' field, in {path}; give"),
        (
            '[{"instruction": "a", "output": "b"}, {"instruction": 3, "output": "b"}]',
            "entry 1 field 'instruction' is a int, not a string, in {path}; make it a JSON string",
        ),
        ("", "the dataset is empty, in {path}; expected a JSON list or JSON Lines"),
        ("[]", "the dataset has no entries, in {path}; expected"),
        ("{not json", "neither a JSON list nor JSON Lines (Expecting property name enclosed"),
        ('{"instruction": "a"}', "the dataset is a JSON dict, not a list of entries, in {path};"),
        ('["just text"]', "entry 0 is a str, not an object, in {path}; expected"),
    ],
)
def test_bad_datasets_get_clear_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "data.json"
    path.write_text(content)
    with pytest.raises(UserError) as error:
        load_entries(str(path))
    assert str(error.value).startswith(message.format(path=path))
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_a_json_lines_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"instruction": "a", "output": "b"}\n\n{"instruction": "c",\n')
    with pytest.raises(UserError, match=f"in {path} line 3;"):
        load_entries(str(path))


def test_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.json"
    with pytest.raises(MissingFile) as error:
        load_entries(str(path))
    assert str(error.value) == (
        f"dataset file {path} does not exist (absolute: {path}); "
        "pass data.path=<a JSON/JSONL file or an http(s) URL>"
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            None,
            "entry 0 has no 'output' field, in src; give every entry string fields "
            "instruction, output",
        ),
        (
            ("instruction", "input", "chosen", "rejected"),
            "entry 0 has no 'rejected' field, in src; give every entry string fields "
            "instruction, chosen, rejected",
        ),
    ],
)
def test_a_missing_field_names_every_required_field(
    fields: tuple[str, ...] | None, message: str
) -> None:
    entry = {"instruction": "a", "input": "b", "chosen": "c"}
    with pytest.raises(UserError) as error:
        validate_entries([entry], "src", *([fields] if fields else []))
    assert str(error.value) == message


def test_load_entries_checks_the_fields_it_is_given(tmp_path: Path) -> None:
    path = tmp_path / "pairs.json"
    pair = {"instruction": "a", "chosen": "b", "rejected": "c"}
    path.write_text(json.dumps([pair]))
    fields = ("instruction", "input", "chosen", "rejected")
    assert load_entries(str(path), fields=fields) == [{**pair, "input": ""}]


def test_a_url_is_read_from_its_cached_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "copy.json"
    copy.write_text(json.dumps(ENTRIES[:1]))
    calls = []

    def local_copy(path: str, cache_dir: Path | None) -> Path:
        calls.append((path, cache_dir))
        return copy

    monkeypatch.setattr("lit_sft.data.entries.local_copy", local_copy)
    url = "https://example.com/data.json"
    assert load_entries(url, cache_dir=tmp_path / "cache") == ENTRIES[:1]
    assert calls == [(url, tmp_path / "cache")]


def test_a_byte_order_mark_and_null_input_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    entries = [{"instruction": "a", "input": None, "output": "b"}, ENTRIES[0]]
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(entries).encode())
    assert load_entries(str(path)) == [{"instruction": "a", "input": "", "output": "b"}, ENTRIES[0]]


SYNTHETIC_FIX = "in the synthetic set; use more entries, or change data.train_fraction"


@pytest.mark.parametrize(
    ("size", "batch_size", "train_fraction", "stage", "message"),
    [
        # 10 entries split train 8 / test 1 / val 1: a batch of 9 never fills (drop_last).
        (
            10,
            9,
            0.85,
            "fit",
            "the train split (train 8, val 1, test 1 entries) is smaller than "
            "one batch of data.batch_size=9 per process, so no step would be trained, in the "
            "synthetic set; pass data.batch_size=8 or less, or use more data",
        ),
        (
            10,
            8,
            0.9,
            "fit",
            f"the val split is empty (train 9, val 0, test 1 entries), {SYNTHETIC_FIX}",
        ),
        (10, 8, 0.9, "validate", "the val split is empty (train 9, val 0, test 1 entries)"),
        (
            4,
            2,
            0.85,
            "test",
            f"the test split is empty (train 3, val 1, test 0 entries), {SYNTHETIC_FIX}",
        ),
    ],
)
def test_a_split_too_small_stops_before_its_stage(
    size: int, batch_size: int, train_fraction: float, stage: str, message: str
) -> None:
    dm = InstructionDataModule(
        None, synthetic_size=size, batch_size=batch_size, train_fraction=train_fraction
    )
    with pytest.raises(UserError) as error:
        dm.setup(stage)
    assert str(error.value).startswith(message)


TINY_SPLITS = {"train": ENTRIES[:2], "val": [], "test": []}


def test_no_stage_checks_fit_and_predict_checks_nothing() -> None:
    with pytest.raises(UserError, match="^the val split is empty"):
        check_split_sizes(TINY_SPLITS, None, 1, 1, "src")
    check_split_sizes(TINY_SPLITS, "predict", 1, 1, "src")


def test_each_process_needs_a_full_train_batch() -> None:
    splits = {"train": ENTRIES * 3, "val": ENTRIES, "test": ENTRIES}  # 9 entries: 5 per process
    check_split_sizes(splits, "fit", 5, 2, "src")
    with pytest.raises(UserError) as error:
        check_split_sizes(splits, "fit", 6, 2, "src")
    assert str(error.value).endswith("in src; pass data.batch_size=5 or less, or use more data")


def test_an_empty_train_split_suggests_no_batch_size() -> None:
    with pytest.raises(UserError) as error:
        check_split_sizes({"train": [], "val": ENTRIES, "test": ENTRIES}, "fit", 1, 1, "src")
    assert str(error.value) == (
        "the train split (train 0, val 3, test 3 entries) is smaller than one batch of "
        "data.batch_size=1 per process, so no step would be trained, in src; use more data"
    )


def test_a_split_of_exactly_one_batch_trains() -> None:
    dm = InstructionDataModule(None, synthetic_size=10, batch_size=8)
    dm.setup("fit")
    assert len(dm.train_dataloader()) == 1


def test_jsonl_and_absent_input_load(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in ENTRIES) + "\n")
    entries = load_entries(str(path))
    assert len(entries) == 3 and entries[2]["input"] == ""


def test_datamodule_batches_and_counts_truncation(tmp_path: Path) -> None:
    long_entry = {"instruction": "word " * 300, "input": "", "output": "ok"}
    path = tmp_path / "data.json"
    path.write_text(json.dumps([long_entry] + ENTRIES * 20))
    dm = InstructionDataModule(
        str(path), batch_size=4, allowed_max_length=128, train_fraction=0.5, test_fraction=0.25
    )
    dm.setup()
    assert dm.truncated == {"train": 1, "val": 0, "test": 0}
    assert dm.response_cut == {"train": 1, "val": 0, "test": 0}
    batches = list(dm.train_dataloader())
    assert len(batches) == len(dm.encoded["train"]) // 4
    assert all(b["input_ids"].shape[1] <= 128 for b in batches)


def test_train_order_is_seeded_and_can_be_unshuffled(tmp_path: Path) -> None:
    def first_batch(**kwargs) -> torch.Tensor:
        dm = InstructionDataModule(None, synthetic_size=100, batch_size=4, **kwargs)
        dm.setup()
        return next(iter(dm.train_dataloader()))["input_ids"]

    assert torch.equal(first_batch(seed=1), first_batch(seed=1))
    assert not torch.equal(first_batch(seed=1), first_batch(seed=2))
    dm = InstructionDataModule(None, synthetic_size=100, batch_size=4, shuffle=False)
    dm.setup()
    expected = collate_instructions(dm.encoded["train"][:4], allowed_max_length=1024)
    assert torch.equal(next(iter(dm.train_dataloader()))["input_ids"], expected["input_ids"])

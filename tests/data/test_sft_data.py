from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import tiktoken
import torch

from lit_sft.data.encoding import EncodedEntry, collate_instructions, encode_entries, encode_entry
from lit_sft.data.entries import check_split_sizes, load_entries, split_entries, validate_entries
from lit_sft.data.sft import InstructionDataModule
from lit_sft.data.synthetic import synthetic_entries
from lit_sft.errors import MissingFile, UserError
from lit_sft.prompts import SamplePrompt, prompt_style
from lit_sft.tokenizer import END_OF_TEXT, IGNORE_INDEX, Tokenizer

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
            "instruction, output (or read 'output' from a field of another name: "
            "data.fields.output=<its name>)",
        ),
        (
            ("instruction", "input", "chosen", "rejected"),
            "entry 0 has no 'rejected' field, in src; give every entry string fields "
            "instruction, chosen, rejected (or read 'rejected' from a field of another name: "
            "data.fields.rejected=<its name>)",
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


def counted_file(tmp_path: Path, count: int = 40) -> str:
    """`count` entries whose responses are 1, 2, ... words: each entry has its own length."""
    entries = [
        {"instruction": "Repeat the word.", "input": "", "output": " ".join(["word"] * (i + 1))}
        for i in range(count)
    ]
    path = tmp_path / "counted.json"
    path.write_text(json.dumps(entries))
    return str(path)


def leaves_the_global_rng_alone(read: Callable[[], object]) -> bool:
    torch.manual_seed(0)
    read()
    after = torch.rand(3)
    torch.manual_seed(0)
    return torch.equal(after, torch.rand(3))


def row_order(dm: InstructionDataModule) -> list[int]:
    """The train entries in the order the train loader yields them, found by their lengths."""
    index = {len(e.tokens): i for i, e in enumerate(dm.encoded["train"])}
    rows = [b["targets"] != IGNORE_INDEX for b in dm.train_dataloader()]
    return [index[int(n)] for r in rows for n in r.sum(dim=1)]


def test_defaults_are_the_books() -> None:
    dm = InstructionDataModule()
    assert (dm.batch_size, dm.allowed_max_length, dm.seed, dm.shuffle) == (8, 1024, 123, True)
    assert (dm.num_workers, dm.synthetic_size, dm.mask_instructions) == (0, 2000, False)
    assert (dm.splits, dm.encoded, dm.truncated, dm.dropped) == ({}, {}, {}, {})


def test_max_train_entries_from_one_to_the_whole_split() -> None:
    one = InstructionDataModule(None, synthetic_size=20, batch_size=1, max_train_entries=1)
    one.setup("fit")
    assert one.splits["train"] == synthetic_entries(20, seed=123)[:1]
    whole = InstructionDataModule(None, synthetic_size=20, batch_size=1, max_train_entries=17)
    whole.setup("fit")
    assert whole.splits["train"] == synthetic_entries(20, seed=123)[:17]
    too_many = InstructionDataModule(None, synthetic_size=20, batch_size=1, max_train_entries=18)
    with pytest.raises(UserError) as error:
        too_many.setup("fit")
    assert str(error.value) == (
        "data.max_train_entries=18 but the train split has only 17 entries; "
        "pass at most that many, or null for all"
    )


def test_a_remote_dataset_is_fetched_into_the_cache_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple] = []

    def load_entries(
        path: str, cache_dir: str | None, field_map: dict | None = None
    ) -> list[dict[str, str]]:
        calls.append(("load", path, cache_dir))
        return ENTRIES

    monkeypatch.setattr("lit_sft.data.base.local_copy", lambda *args: calls.append(args))
    monkeypatch.setattr("lit_sft.data.sft.load_entries", load_entries)
    url = "https://example.com/data.json"
    dm = InstructionDataModule(url, cache_dir=str(tmp_path))
    dm.prepare_data()
    assert dm.entries() == ENTRIES
    assert calls == [(url, str(tmp_path)), ("load", url, str(tmp_path))]
    InstructionDataModule(str(tmp_path / "local.json")).prepare_data()  # nothing to fetch
    InstructionDataModule(None).prepare_data()
    assert len(calls) == 2


def test_encoding_shows_a_progress_bar_only_when_asked(
    tokenizer: tiktoken.Encoding, capsys: pytest.CaptureFixture[str]
) -> None:
    style, entries = prompt_style("alpaca"), validate_entries(ENTRIES, "test")
    encoded = encode_entries(entries, style, Tokenizer())
    assert capsys.readouterr().err == ""
    prompts = [tokenizer.encode(style.prompt(e)) for e in entries]
    assert [e.prompt_length for e in encoded] == [len(p) for p in prompts]
    outputs = [tokenizer.encode(e["output"]) for e in entries]
    assert [e.tokens for e in encoded] == [p + o for p, o in zip(prompts, outputs, strict=True)]
    encode_entries(entries, style, Tokenizer(), progress=True)
    bar = capsys.readouterr().err.split("\r")[-1]
    assert bar.startswith("encoding: 100%|") and "| 3/3 [" in bar and "entry/s]" in bar


def test_entries_past_one_chunk_are_all_encoded_with_a_bar_from_one_chunk_on(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("lit_sft.data.encoding.ENCODE_CHUNK", 2)
    entries = validate_entries(ENTRIES, "test")
    dm = InstructionDataModule(None)
    assert dm.encode(entries[:1]) == [encode_entry(entries[0], dm.style, dm.tokenizer)]
    assert capsys.readouterr().err == ""
    dm.encode(entries[:2])
    assert "encoding: 100%|" in capsys.readouterr().err
    encoded = dm.encode(entries)
    assert encoded == [encode_entry(e, dm.style, dm.tokenizer) for e in entries]


def test_truncation_is_counted_past_the_limit(caplog: pytest.LogCaptureFixture) -> None:
    dm = InstructionDataModule(None, allowed_max_length=4)
    # Lengths 4, 5, 6, 8; responses from target 1, 3, 4, 5: the last two start at or past 4.
    dm.encoded["x"] = [EncodedEntry([1] * n, p) for n, p in [(4, 2), (5, 4), (6, 5), (8, 6)]]
    with caplog.at_level(logging.WARNING, logger="lit_sft.data.base"):
        dm._count_truncation("x")
    assert (dm.truncated, dm.response_cut) == ({"x": 3}, {"x": 2})
    assert caplog.messages == [
        "3 of 4 x entries are longer than allowed_max_length=4 and get truncated "
        "(2 of them lose their whole response)"
    ]


def test_drop_keeps_train_entries_up_to_the_limit(caplog: pytest.LogCaptureFixture) -> None:
    dm = InstructionDataModule(None, allowed_max_length=4, overlength="drop")
    dm.splits["train"] = ENTRIES
    dm.encoded["train"] = [EncodedEntry([1] * n, 1) for n in (5, 4, 3)]
    with caplog.at_level(logging.INFO, logger="lit_sft.data.base"):
        dm._drop_overlength_train()
    assert dm.splits["train"] == ENTRIES[1:] and dm.dropped == {"train": 1}
    assert dm.encoded["train"] == [EncodedEntry([1] * n, 1) for n in (4, 3)]
    assert caplog.messages == [
        "dropped 1 train entries longer than allowed_max_length=4 (data.overlength=drop)"
    ]
    dm.encoded["train"], dm.splits["train"] = [EncodedEntry([1] * 5, 1)], ENTRIES[:1]
    with pytest.raises(UserError) as error:
        dm._drop_overlength_train()
    assert str(error.value) == (
        "every train entry is longer than data.allowed_max_length=4; "
        "raise it or use data.overlength=truncate"
    )


def test_the_sample_prompt_is_the_first_validation_entry(tokenizer: tiktoken.Encoding) -> None:
    dm = InstructionDataModule(None, synthetic_size=40)
    assert dm.sample_prompt() is None
    dm.setup()
    entry = synthetic_entries(40, seed=123)[-2]  # train 34, test 4, val 2
    text = prompt_style("alpaca").prompt(entry)
    assert dm.sample_prompt() == SamplePrompt(text, tokenizer.encode(text), entry["output"])


def test_eval_loaders_mask_keep_file_order_and_leave_the_global_rng_alone(tmp_path: Path) -> None:
    dm = InstructionDataModule(counted_file(tmp_path), batch_size=3, mask_instructions=True)
    dm.setup()
    for split, sizes in (("val", [2]), ("test", [3, 1])):
        batches = list(dm.val_dataloader() if split == "val" else dm.test_dataloader())
        assert [len(b["input_ids"]) for b in batches] == sizes
        encoded = dm.encoded[split]
        # Masked: the response and its end-of-text are the only targets, rows in file order.
        counts = torch.cat([(b["targets"] != IGNORE_INDEX).sum(dim=1) for b in batches])
        assert counts.tolist() == [len(e.tokens) - e.prompt_length + 1 for e in encoded]
        starts = torch.cat([b["response_start"] for b in batches]).tolist()
        assert starts == [e.prompt_length - 1 for e in encoded]
    assert leaves_the_global_rng_alone(lambda: list(dm.val_dataloader()))


def test_train_batches_are_cut_to_the_allowed_length_and_use_the_workers(tmp_path: Path) -> None:
    dm = InstructionDataModule(counted_file(tmp_path), batch_size=4, allowed_max_length=9)
    dm.setup()
    assert {b["input_ids"].shape for b in dm.train_dataloader()} == {(4, 9)}
    for group_by_length in (False, True):
        dm.group_by_length, dm.num_workers = group_by_length, 2
        assert dm.train_dataloader().num_workers == 2
    assert dm.val_dataloader().num_workers == dm.test_dataloader().num_workers == 2


def test_the_train_shuffle_depends_on_the_seed_only(tmp_path: Path) -> None:
    def order(**kwargs: object) -> list[int]:
        dm = InstructionDataModule(counted_file(tmp_path), batch_size=2, **kwargs)
        dm.setup()
        return row_order(dm)

    assert order(shuffle=False) == list(range(34))
    shuffled = order(seed=1)
    assert shuffled == order(seed=1) != order(seed=2)
    assert sorted(shuffled) == list(range(34)) != shuffled


def test_length_grouped_batches_are_seeded_by_the_datamodule(tmp_path: Path) -> None:
    def order(global_seed: int, seed: int = 1) -> list[int]:
        dm = InstructionDataModule(counted_file(tmp_path), batch_size=2, group_by_length=True)
        dm.seed = seed
        dm.setup()
        torch.manual_seed(global_seed)
        return row_order(dm)

    assert order(0) == order(1) != order(0, seed=2)
    dm = InstructionDataModule(counted_file(tmp_path), batch_size=2, group_by_length=True)
    dm.setup()
    assert leaves_the_global_rng_alone(lambda: list(dm.train_dataloader()))
    dm = InstructionDataModule(None, synthetic_size=20, group_by_length=True, shuffle=False)
    dm.setup()
    with pytest.raises(UserError) as error:
        dm.train_dataloader()
    assert str(error.value) == (
        "data.group_by_length=true needs data.shuffle=true and a single process; "
        "drop it for data.shuffle=false or a multi-device trainer"
    )


@pytest.mark.parametrize("shuffle", [True, False])
def test_each_process_reads_its_share_of_the_train_split(tmp_path: Path, shuffle: bool) -> None:
    dm = InstructionDataModule(counted_file(tmp_path), batch_size=4, shuffle=shuffle, seed=5)
    dm.trainer = SimpleNamespace(world_size=2, global_rank=1)
    dm.setup("fit")
    # DistributedSampler's order: a permutation seeded with seed + epoch, every other index.
    all_rows = torch.randperm(34, generator=torch.Generator().manual_seed(5)).tolist()
    expected = all_rows if shuffle else list(range(34))
    assert row_order(dm) == expected[1::2][:16]  # 17 rows, 4 batches of 4
    dm.group_by_length = True
    with pytest.raises(UserError, match="group_by_length=true needs"):
        dm.train_dataloader()


def test_the_train_batch_must_fit_each_process(tmp_path: Path) -> None:
    dm = InstructionDataModule(counted_file(tmp_path), batch_size=17)
    dm.trainer = SimpleNamespace(world_size=2, global_rank=0)
    dm.setup("fit")
    dm.batch_size = 18
    with pytest.raises(UserError, match="pass data.batch_size=17 or less"):
        dm.setup("fit")

"""The 52k Alpaca preset (against a local server), over-length entries, and the data-size knob."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra.utils import instantiate

from lit_sft.data.encoding import encode_entries, encode_entry
from lit_sft.data.sft import InstructionDataModule
from lit_sft.prompts import prompt_style
from lit_sft.tokenizer import Tokenizer
from tests.helpers.config import compose_config
from tests.helpers.hub_server import HubServer

ALPACA_URL = "https://raw.githubusercontent.com/tatsu-lab/stanford_alpaca/main/alpaca_data.json"
LONG = "word " * 600  # 600 tokens: past the preset's 512


def alpaca_entries(count: int) -> list[dict[str, str]]:
    """The real file's layout: instruction, input (often ""), output; some entries very long."""
    entries = []
    for i in range(count):
        entry = {"instruction": f"Give example {i}.", "input": "", "output": f"Example {i}."}
        if i % 3 == 1:
            entry["input"] = f"Context {i}"
        if i in (2, 5):  # train entries: 20 entries split 17 / 2 / 1
            entry["output"] = LONG
        entries.append(entry)
    return entries


@pytest.fixture
def alpaca_server() -> Iterator[str]:
    hub = HubServer().start()
    hub.add_static(
        "/tatsu-lab/stanford_alpaca/main/alpaca_data.json", json.dumps(alpaca_entries(20)).encode()
    )
    yield f"{hub.url}/tatsu-lab/stanford_alpaca/main/alpaca_data.json"
    hub.stop()


def alpaca_module(url: str, tmp_path: Path, *overrides: str) -> InstructionDataModule:
    cfg = compose_config(
        ["data=alpaca52k", f"data.path={url}", f"data.cache_dir={tmp_path}", *overrides]
    )
    return instantiate(cfg.data)


def test_the_preset_has_the_books_settings_for_the_52k_set() -> None:
    data = compose_config(["data=alpaca52k"]).data
    assert (data.path, data.batch_size, data.allowed_max_length) == (ALPACA_URL, 4, 512)
    assert (data.overlength, data.max_train_entries) == ("truncate", None)


def test_alpaca52k_from_a_local_server_truncates_and_counts(
    alpaca_server: str, tmp_path: Path
) -> None:
    data = alpaca_module(alpaca_server, tmp_path)
    data.prepare_data()
    data.setup("fit")
    assert [len(data.splits[s]) for s in ("train", "val", "test")] == [17, 1, 2]
    assert data.splits["train"][1] == {
        "instruction": "Give example 1.",
        "input": "Context 1",
        "output": "Example 1.",
    }
    assert data.truncated == {"train": 2, "val": 0, "test": 0} and data.dropped == {}
    batch = next(iter(data.train_dataloader()))
    assert batch["input_ids"].shape[0] == 4 and batch["input_ids"].shape[1] <= 512
    longest = max(len(e.tokens) for e in data.encoded["train"])
    assert longest > 600  # kept whole; the collate cuts it to 512


def test_overlength_drop_leaves_out_long_train_entries_only(
    alpaca_server: str, tmp_path: Path
) -> None:
    data = alpaca_module(alpaca_server, tmp_path, "data.overlength=drop")
    data.setup("fit")
    assert data.dropped == {"train": 2} and data.truncated["train"] == 0
    assert [e["instruction"] for e in data.splits["train"]] == [
        f"Give example {i}." for i in range(17) if i not in (2, 5)
    ]
    assert len(data.encoded["train"]) == 15 and len(data.splits["val"]) == 1


def test_a_run_reports_dropped_entries_in_its_summary(tiny_config, tmp_path: Path) -> None:
    from lit_sft.cli.train import train

    summary = train(
        tiny_config("data.overlength=drop", "data.allowed_max_length=40", "trainer.max_steps=1")
    )
    dropped, kept = summary["dropped_entries"]["train"], 170 - summary["dropped_entries"]["train"]
    encoded = instantiate(tiny_config("data.allowed_max_length=40").data)
    encoded.setup("fit")
    assert dropped == sum(len(e.tokens) > 40 for e in encoded.encoded["train"]) and kept > 0
    assert summary["truncated_entries"]["train"] == 0


def test_max_train_entries_keeps_the_first_n_and_the_other_splits(tiny_config) -> None:
    full = instantiate(tiny_config().data)
    full.setup("fit")
    some = instantiate(tiny_config("data.max_train_entries=9").data)
    some.setup("fit")
    assert some.splits["train"] == full.splits["train"][:9]
    assert some.splits["val"] == full.splits["val"] and some.splits["test"] == full.splits["test"]
    too_many = instantiate(tiny_config("data.max_train_entries=171").data)
    with pytest.raises(ValueError, match=r"max_train_entries=171 but the train split has only 170"):
        too_many.setup("fit")


def test_bad_overlength_and_size_are_named() -> None:
    with pytest.raises(ValueError, match=r"data.overlength='cut'.*truncate"):
        InstructionDataModule(overlength="cut")
    with pytest.raises(ValueError, match=r"data.max_train_entries=0: expected N >= 1 or null"):
        InstructionDataModule(max_train_entries=0)


def test_batch_encoding_equals_one_by_one() -> None:
    entries = alpaca_entries(9) + [
        {"instruction": "Ünïcode 😀", "input": "<|endoftext|>", "output": "ok"}
    ]
    tokenizer, style = Tokenizer(), prompt_style("phi3")
    assert encode_entries(entries, style, tokenizer) == [
        encode_entry(e, style, tokenizer) for e in entries
    ]


@pytest.mark.parametrize("threads", [None, 1, 2, 3, 50])
def test_encode_batch_keeps_order_for_any_thread_count(threads: int | None) -> None:
    tokenizer = Tokenizer()
    texts = [f"entry {i} " * (i % 5) for i in range(23)] + ["é<|endoftext|>"]
    expected = [tokenizer.encoding.encode(t, allowed_special={"<|endoftext|>"}) for t in texts]
    assert tokenizer.encode_batch(texts, num_threads=threads) == expected
    assert tokenizer.encode_batch([], num_threads=threads) == []

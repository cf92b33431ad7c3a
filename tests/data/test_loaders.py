"""Length-grouped batches: each entry once an epoch, seeded, resumable mid-epoch, less padding."""

from __future__ import annotations

import pytest
import torch

from lit_sft.data.loaders import LengthGroupedBatchSampler, ResumableDataLoader
from lit_sft.data.sft import InstructionDataModule

LENGTHS = [(7 * i) % 23 + 1 for i in range(50)]  # 23 distinct lengths, in no particular order


def grouped(seed: int, lengths: list[int] = LENGTHS, **kwargs) -> LengthGroupedBatchSampler:
    return LengthGroupedBatchSampler(lengths, 4, torch.Generator().manual_seed(seed), **kwargs)


def loader(seed: int) -> ResumableDataLoader:
    generator = torch.Generator().manual_seed(seed)
    sampler = LengthGroupedBatchSampler(LENGTHS, 4, generator, bucket_batches=3)
    return ResumableDataLoader(
        list(range(len(LENGTHS))), batch_sampler=sampler, collate_fn=list, generator=generator
    )


def test_every_entry_once_per_epoch() -> None:
    sampler = grouped(0)
    for _ in range(3):
        batches = list(sampler)
        assert len(batches) == len(sampler) == 12 and all(len(b) == 4 for b in batches)
        drawn = [i for batch in batches for i in batch]
        assert len(set(drawn)) == 48  # 50 entries, the 2 that do not fill a batch left out
    whole = grouped(0, list(range(1, 41)))  # divisible: every entry, exactly once
    assert sorted(i for batch in whole for i in batch) == list(range(40))


def test_one_bucket_gives_the_sorted_order_cut_into_batches() -> None:
    lengths = LENGTHS[:48]
    longest_first = sorted(lengths, reverse=True)
    expected = [longest_first[s : s + 4] for s in range(0, 48, 4)]
    batches = list(grouped(5, lengths, bucket_batches=12))
    assert sorted(i for batch in batches for i in batch) == list(range(48))
    batch_lengths = [[lengths[i] for i in batch] for batch in batches]
    assert sorted(batch_lengths) == sorted(expected)
    assert batch_lengths != expected  # the batches themselves come in a shuffled order


def test_seeded_and_reshuffled_every_epoch() -> None:
    def contents(batches: list[list[int]]) -> list[list[int]]:
        return sorted(sorted(batch) for batch in batches)

    first, again, other = grouped(1), grouped(1), grouped(2)
    epoch1 = list(first)
    assert epoch1 == list(again)
    # Other batches, not only the same ones in another order.
    assert contents(epoch1) != contents(list(other))
    assert contents(list(first)) != contents(epoch1)  # the next epoch draws new buckets


def test_resumes_mid_epoch_in_the_same_order() -> None:
    uninterrupted = loader(3)
    epochs = [list(uninterrupted) for _ in range(3)]
    interrupted = loader(3)
    assert list(interrupted) == epochs[0]
    partial = iter(interrupted)
    assert [next(partial) for _ in range(5)] == epochs[1][:5]
    state = interrupted.state_dict()
    resumed = loader(3)
    resumed.load_state_dict(state)
    assert list(resumed) == epochs[1][5:]
    assert list(resumed) == epochs[2]


def test_grouped_batches_pad_less_than_plain_ones() -> None:
    def padding_share(batches: list[dict[str, torch.Tensor]]) -> float:
        positions = sum(b["input_ids"].numel() for b in batches)
        padded = sum(int((b["targets"] == -100).sum()) for b in batches)
        return padded / positions

    def batches(group_by_length: bool) -> list[dict[str, torch.Tensor]]:
        dm = InstructionDataModule(
            None, synthetic_size=400, batch_size=8, group_by_length=group_by_length
        )
        dm.setup()
        return list(dm.train_dataloader())

    plain, grouped_batches = batches(False), batches(True)
    assert len(grouped_batches) == len(plain) == 340 // 8
    rows = [row for b in grouped_batches for row in b["input_ids"].tolist()]
    assert len({tuple(row) for row in rows}) == len(rows)  # no entry twice
    # Unmasked targets are ignored exactly on the padding after each entry's end-of-text.
    assert padding_share(grouped_batches) < padding_share(plain) / 3


def test_grouping_needs_shuffled_batches() -> None:
    dm = InstructionDataModule(None, synthetic_size=100, group_by_length=True, shuffle=False)
    dm.setup()
    with pytest.raises(ValueError, match="group_by_length=true needs data.shuffle=true"):
        dm.train_dataloader()

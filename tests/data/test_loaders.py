"""The train loaders: ResumableDataLoader continues the same shuffled order from its state;
length-grouped batches take each entry once an epoch, seeded, resumable, with less padding."""

from __future__ import annotations

import pytest
import torch

from lit_sft.data.loaders import LengthGroupedBatchSampler, ResumableDataLoader
from lit_sft.data.sft import InstructionDataModule

LENGTHS = [(7 * i) % 23 + 1 for i in range(50)]  # 23 distinct lengths, in no particular order


def grouped(seed: int, lengths: list[int] = LENGTHS, **kwargs) -> LengthGroupedBatchSampler:
    return LengthGroupedBatchSampler(lengths, 4, torch.Generator().manual_seed(seed), **kwargs)


def grouped_loader(seed: int) -> ResumableDataLoader:
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
    uninterrupted = grouped_loader(3)
    epochs = [list(uninterrupted) for _ in range(3)]
    interrupted = grouped_loader(3)
    assert list(interrupted) == epochs[0]
    partial = iter(interrupted)
    assert [next(partial) for _ in range(5)] == epochs[1][:5]
    state = interrupted.state_dict()
    resumed = grouped_loader(3)
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


def loader() -> ResumableDataLoader:
    """Ten items in shuffled batches of 3 (the last, short one dropped): 3 batches an epoch."""
    return ResumableDataLoader(
        list(range(10)),
        batch_size=3,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(7),
    )


def epochs(data: ResumableDataLoader, count: int) -> list[list[list[int]]]:
    return [[batch.tolist() for batch in data] for _ in range(count)]


# The order an uninterrupted loader gives, from the generator seeded with 7, written out so a
# change in how the loader draws shows up here.
EXPECTED = epochs(loader(), 2)


def test_expected_order_is_a_shuffle_per_epoch() -> None:
    first, second = EXPECTED
    assert len(first) == len(second) == 3
    assert first != second
    for epoch in EXPECTED:
        items = sorted(i for batch in epoch for i in batch)
        assert len(items) == 9 and len(set(items)) == 9 and set(items) <= set(range(10))


def test_fresh_state_has_yielded_nothing() -> None:
    state = loader().state_dict()
    assert state["yielded"] == 0 and state["rng_epoch_start"] is None
    assert torch.equal(state["rng_now"], torch.Generator().manual_seed(7).get_state())


@pytest.mark.parametrize("taken", [1, 2])
def test_resumed_mid_epoch_continues_the_same_order(taken: int) -> None:
    interrupted = loader()
    batches = iter(interrupted)
    for _ in range(taken):
        next(batches)
    state = interrupted.state_dict()
    assert state["yielded"] == taken

    resumed = loader()
    resumed.load_state_dict(state)
    assert [b.tolist() for b in resumed] == EXPECTED[0][taken:]
    assert [b.tolist() for b in resumed] == EXPECTED[1]


def test_resumed_after_a_finished_epoch_starts_the_next_one() -> None:
    finished = loader()
    assert [b.tolist() for b in finished] == EXPECTED[0]
    resumed = loader()
    resumed.load_state_dict(finished.state_dict())
    assert [b.tolist() for b in resumed] == EXPECTED[1]


def test_unfetched_batch_is_drawn_again() -> None:
    interrupted = loader()
    batches = iter(interrupted)
    next(batches), next(batches)
    interrupted.unfetch(1)  # the second batch was fetched but never trained on
    resumed = loader()
    resumed.load_state_dict(interrupted.state_dict())
    assert [b.tolist() for b in resumed] == EXPECTED[0][1:]
    interrupted_at_the_end = loader()
    assert len(list(interrupted_at_the_end)) == 3
    interrupted_at_the_end.unfetch(1)
    resumed = loader()
    resumed.load_state_dict(interrupted_at_the_end.state_dict())
    assert [b.tolist() for b in resumed] == EXPECTED[0][2:]


def test_resumed_mid_second_epoch_rewinds_to_that_epochs_shuffle() -> None:
    interrupted = loader()
    list(interrupted)
    batches = iter(interrupted)
    next(batches)
    resumed = loader()  # a fresh generator is at the first epoch's shuffle, not the second's
    resumed.load_state_dict(interrupted.state_dict())
    assert [b.tolist() for b in resumed] == EXPECTED[1][1:]


def test_unshuffled_loader_without_a_generator_resumes_by_skipping() -> None:
    def plain() -> ResumableDataLoader:
        return ResumableDataLoader(list(range(6)), batch_size=2)

    interrupted = plain()
    next(iter(interrupted))
    state = interrupted.state_dict()
    assert state == {"yielded": 1, "rng_epoch_start": None, "rng_now": None}
    resumed = plain()
    resumed.load_state_dict(state)
    assert [b.tolist() for b in resumed] == [[2, 3], [4, 5]]

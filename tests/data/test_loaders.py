"""ResumableDataLoader: a loader rebuilt from its state_dict continues the same shuffled order."""

from __future__ import annotations

import pytest
import torch

from lit_sft.data.loaders import ResumableDataLoader


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

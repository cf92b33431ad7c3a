"""Generation: cache, batching, stopping, context limit, seeded sampling; response extraction."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import torch

from lit_sft.checkpoints import load_weights
from lit_sft.generation import (
    DONE_CHECK_EVERY,
    DROP_DONE_SHARE,
    attention_mask,
    decode_steps,
    generate,
    left_pad,
    next_token,
    stream,
)
from lit_sft.model import GPT, GPTConfig
from lit_sft.prompts import prompt_style
from tests.helpers.gpt2 import our_config, random_hf_model, save_hf_checkpoint

CONTEXT = 32
NEVER = -1  # an end-of-text id no token has, so every answer runs to max_new_tokens
PROMPTS = [[5], [7, 8, 9], [1, 2, 3, 4, 5, 6, 7], [11] * 4 + [12] * 8]


@pytest.fixture(scope="module")
def model() -> GPT:
    """A tiny GPT with fixed random weights, in float64.

    Float64 keeps the argmax clear of rounding, so "the same tokens" tests the cache and padding
    logic rather than the order of summation.
    """
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=48, context_length=CONTEXT, emb_dim=32, n_layers=2, n_heads=4))
    return gpt.double().eval()


def test_cached_generation_equals_uncached(model: GPT) -> None:
    cached = generate(model, PROMPTS, max_new_tokens=12, eos_id=NEVER)
    uncached = generate(model, PROMPTS, max_new_tokens=12, eos_id=NEVER, use_cache=False)
    assert cached == uncached
    assert [len(answer) for answer in cached] == [12] * len(PROMPTS)
    # A model whose answers do not depend on the prompt would pass the above trivially.
    assert len({tuple(answer) for answer in cached}) > 1


MIXED = [*PROMPTS, [30, 31], [9] * 10, [2, 40, 3, 41, 4]]


@pytest.mark.parametrize("batch_size", range(1, len(MIXED) + 1))
def test_every_batch_size_gives_the_uncached_tokens(model: GPT, batch_size: int) -> None:
    # 20 new tokens cross the end-of-text checks (every DONE_CHECK_EVERY steps) more than once.
    uncached = [
        generate(model, [p], max_new_tokens=20, eos_id=NEVER, use_cache=False)[0] for p in MIXED
    ]
    batched = []
    for start in range(0, len(MIXED), batch_size):
        batch = MIXED[start : start + batch_size]
        batched += generate(model, batch, max_new_tokens=20, eos_id=NEVER)
    assert batched == uncached
    assert [len(a) for a in batched] == [20] * len(MIXED)


def test_batched_generation_equals_one_by_one(model: GPT) -> None:
    batched = generate(model, PROMPTS, max_new_tokens=12, eos_id=NEVER)
    singles = [generate(model, [prompt], max_new_tokens=12, eos_id=NEVER)[0] for prompt in PROMPTS]
    assert batched == singles


def test_stops_at_end_of_text_and_others_go_on(model: GPT) -> None:
    full = generate(model, PROMPTS[:2], max_new_tokens=12, eos_id=NEVER)
    eos = full[0][4]
    stop = full[0].index(eos)
    stopped = generate(model, PROMPTS[:2], max_new_tokens=12, eos_id=eos)
    assert stopped[0] == full[0][:stop]
    other = full[1]
    assert stopped[1] == (other[: other.index(eos)] if eos in other else other)


def test_stops_at_max_new_tokens_256_by_default(model: GPT) -> None:
    assert inspect.signature(generate).parameters["max_new_tokens"].default == 256
    roomy = GPT(GPTConfig(vocab_size=48, context_length=300, emb_dim=16, n_layers=1, n_heads=2))
    assert len(generate(roomy.eval(), [[1, 2, 3]], eos_id=NEVER)[0]) == 256
    assert len(list(stream(roomy, [1, 2, 3], eos_id=NEVER))) == 256
    assert [len(a) for a in generate(model, PROMPTS, max_new_tokens=3, eos_id=NEVER)] == [3] * 4


@pytest.mark.parametrize("use_cache", [True, False])
def test_never_generates_past_the_context(model: GPT, use_cache: bool) -> None:
    near_limit = list(range(1, CONTEXT - 2))  # room for 3 more positions
    too_long = [i % 40 + 1 for i in range(CONTEXT + 9)]
    answers = generate(
        model, [near_limit, [3, 4], too_long], max_new_tokens=50, eos_id=NEVER, use_cache=use_cache
    )
    # The batch is as long as its longest prompt, the last CONTEXT - 1 tokens of `too_long`.
    assert [len(a) for a in answers] == [1, 1, 1]
    alone = generate(model, [near_limit], max_new_tokens=50, eos_id=NEVER, use_cache=use_cache)
    assert len(alone[0]) == 3
    assert alone == generate(model, [near_limit], max_new_tokens=50, eos_id=NEVER, use_cache=False)
    assert generate(model, [too_long], eos_id=NEVER) == generate(
        model, [too_long[-(CONTEXT - 1) :]], eos_id=NEVER
    )


def sample(model: GPT, seed: int, **kwargs) -> list[list[int]]:
    return generate(
        model,
        PROMPTS,
        max_new_tokens=10,
        eos_id=NEVER,
        temperature=kwargs.pop("temperature", 1.5),
        generator=torch.Generator().manual_seed(seed),
        **kwargs,
    )


def test_seeded_sampling_is_reproducible(model: GPT) -> None:
    assert sample(model, 7) == sample(model, 7)
    assert sample(model, 7, top_k=5) == sample(model, 7, top_k=5)
    assert sample(model, 7) != sample(model, 8)
    assert sample(model, 7, top_k=5) == sample(model, 7, top_k=5, use_cache=False)


def test_top_1_sampling_is_greedy(model: GPT) -> None:
    greedy = generate(model, PROMPTS, max_new_tokens=10, eos_id=NEVER)
    assert sample(model, 3, top_k=1) == greedy


def test_stream_is_greedy_by_default_and_passes_the_sampling_on(model: GPT) -> None:
    prompt = PROMPTS[2]
    greedy = generate(model, [prompt], max_new_tokens=10, eos_id=NEVER)[0]
    assert list(stream(model, prompt, max_new_tokens=10, eos_id=NEVER)) == greedy
    args = dict(max_new_tokens=10, eos_id=NEVER, temperature=1.5)
    top1 = stream(model, prompt, top_k=1, generator=torch.Generator().manual_seed(3), **args)
    assert list(top1) == greedy
    seeded = stream(model, prompt, generator=torch.Generator().manual_seed(7), **args)
    alone = generate(model, [prompt], generator=torch.Generator().manual_seed(7), **args)[0]
    assert list(seeded) == alone != greedy


def test_top_k_sampling_keeps_to_the_k_most_likely(model: GPT) -> None:
    prompt = PROMPTS[2]
    logits = model(torch.tensor([prompt]))[0, -1]
    top3 = set(torch.topk(logits, 3).indices.tolist())
    firsts = {
        generate(
            model,
            [prompt],
            max_new_tokens=1,
            temperature=1.0,
            top_k=3,
            generator=torch.Generator().manual_seed(seed),
        )[0][0]
        for seed in range(40)
    }
    assert firsts <= top3 and len(firsts) > 1


def test_greedy_answers_equal_transformers_step_by_step(tmp_path: Path) -> None:
    """Left padding and positions against transformers' GPT-2, fed each unpadded prompt whole."""
    hf = random_hf_model(tie=False).double()
    model = GPT(our_config())
    load_weights(model, save_hf_checkpoint(hf, tmp_path / "m.safetensors", prefix="", head=True))
    prompts = [[5], [7, 8, 9, 10, 11, 12], [300, 2, 3]]
    expected = []
    with torch.no_grad():
        for prompt in prompts:
            ids = list(prompt)
            for _ in range(6):
                ids.append(int(hf(torch.tensor([ids])).logits[0, -1].argmax()))
            expected.append(ids[len(prompt) :])
    assert generate(model.double().eval(), prompts, max_new_tokens=6, eos_id=NEVER) == expected


def fed_lengths(model: GPT, run: Callable[[], object]) -> list[int]:
    """How many positions each forward of `run()` feeds the model."""
    lengths = []
    handle = model.tok_emb.register_forward_hook(
        lambda _, args, __: lengths.append(args[0].shape[1])
    )
    run()
    handle.remove()
    return lengths


def test_each_new_token_costs_one_position_unless_uncached(model: GPT) -> None:
    prompts = [[1, 2, 3], [4]]

    def cached() -> list[list[int]]:
        return generate(model, prompts, max_new_tokens=4, eos_id=NEVER)

    def uncached() -> list[list[int]]:
        return generate(model, prompts, max_new_tokens=4, eos_id=NEVER, use_cache=False)

    def streamed() -> list[int]:
        return list(stream(model, [1, 2], max_new_tokens=3, eos_id=NEVER))

    assert fed_lengths(model, cached) == [3, 1, 1, 1]
    assert fed_lengths(model, uncached) == [3, 4, 5, 6]
    assert fed_lengths(model, streamed) == [2, 1, 1]


def test_stops_at_the_first_check_after_every_answer_ended(model: GPT) -> None:
    eos = generate(model, PROMPTS[:1], max_new_tokens=1, eos_id=NEVER)[0][0]
    args = dict(max_new_tokens=30, eos_id=eos, temperature=0.0, top_k=None, generator=None)
    steps = list(decode_steps(model, PROMPTS[:1], **args))
    assert len(steps) == DONE_CHECK_EVERY == 8
    assert [int(t) for t in steps] == [eos] * 8
    assert len(list(decode_steps(model, PROMPTS[:1], **{**args, "eos_id": NEVER}))) == 30


def test_sampling_follows_the_tempered_top_k_softmax() -> None:
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]]).repeat(4000, 1)
    generator = torch.Generator().manual_seed(0)
    tokens = next_token(logits, temperature=2.0, top_k=2, generator=generator)
    assert set(tokens.tolist()) == {1, 2}
    # By hand: softmax([3, 2] / 2) gives token 1 e^1.5 / (e^1.5 + e^1) = 0.6225.
    assert (tokens == 1).float().mean().item() == pytest.approx(0.6225, abs=0.03)
    assert next_token(logits[:2], 0.0, None, None).tolist() == [1, 1]


def test_left_pad_and_the_prompt_mask_by_hand() -> None:
    ids, real = left_pad([[4, 5, 6], [7], []], pad_id=9)
    assert ids.dtype == torch.long and real.dtype == torch.bool
    assert ids.tolist() == [[4, 5, 6], [9, 9, 7], [9, 9, 9]]
    assert real.tolist() == [[True] * 3, [False, False, True], [False] * 3]
    mask = attention_mask(real[:2], query_start=1)  # queries 1 and 2 of each row
    assert mask.shape == (2, 1, 2, 3)
    assert mask[:, 0].tolist() == [
        [[True, True, False], [True, True, True]],
        [[False, True, False], [False, False, True]],  # padding query 1 sees itself only
    ]


ENTRY = {"instruction": "Reverse the word.", "input": "abc", "output": "cba"}


@pytest.mark.parametrize("style", ["alpaca", "phi3"])
def test_response_extraction_round_trips(style: str) -> None:
    prompts = prompt_style(style)
    assert prompts.extract_response(prompts.prompt(ENTRY) + "  cba \n") == "cba"
    # Generated text starts after the header, so without one all of it (stripped) is the answer.
    assert prompts.extract_response(" cba\n") == "cba"
    assert prompts.extract_response("") == ""


def test_response_extraction_uses_each_styles_header() -> None:
    alpaca, phi3 = prompt_style("alpaca"), prompt_style("phi3")
    assert alpaca.extract_response("noise ### Response:\nPositive.") == "Positive."
    assert phi3.extract_response("<|user|>\nHi\n<|assistant|>:\nHello!") == "Hello!"
    # One style's header means nothing to the other.
    assert phi3.extract_response("### Response:\nPositive.") == "### Response:\nPositive."
    assert alpaca.extract_response("<|assistant|>:\nHello!") == "<|assistant|>:\nHello!"


def fed_rows(model: GPT, run: Callable[[], object]) -> list[int]:
    """How many sequences each forward of `run()` feeds the model."""
    rows = []
    handle = model.tok_emb.register_forward_hook(lambda _, args, __: rows.append(args[0].shape[0]))
    run()
    handle.remove()
    return rows


def staggered_eos(model: GPT, prompts: list[list[int]]) -> tuple[int, list[int]]:
    """An end-of-text id that ends DROP_DONE_SHARE or more of the answers, not all, by the first
    check; and each answer's length with it (20 new tokens at most: the longest prompt's room)."""
    free = generate(model, prompts, max_new_tokens=20, eos_id=NEVER)
    for eos in range(model.config.vocab_size):
        lengths = [a.index(eos) if eos in a else 20 for a in free]
        ended = sum(n < DONE_CHECK_EVERY for n in lengths)
        if ended >= DROP_DONE_SHARE * len(prompts) and max(lengths) > DONE_CHECK_EVERY + 1:
            return eos, lengths
    raise AssertionError("no token ends the answers at staggered steps")


def test_done_answers_leave_the_batch_and_the_others_are_unchanged(model: GPT) -> None:
    eos, lengths = staggered_eos(model, MIXED)
    run = lambda: generate(model, MIXED, max_new_tokens=20, eos_id=eos)  # noqa: E731
    rows = fed_rows(model, run)
    # All rows until the first check; then only those still decoding.
    assert rows[:DONE_CHECK_EVERY] == [len(MIXED)] * DONE_CHECK_EVERY
    assert rows[DONE_CHECK_EVERY] == sum(n >= DONE_CHECK_EVERY for n in lengths) < len(MIXED)
    answers = run()
    assert [len(a) for a in answers] == lengths
    alone = [generate(model, [p], max_new_tokens=20, eos_id=eos)[0] for p in MIXED]
    uncached = generate(model, MIXED, max_new_tokens=20, eos_id=eos, use_cache=False)
    assert answers == alone == uncached


def test_done_answers_leave_from_exactly_drop_done_share_of_the_batch(model: GPT) -> None:
    eos, lengths = staggered_eos(model, MIXED)
    ended = sum(n < DONE_CHECK_EVERY for n in lengths)
    longest = MIXED[lengths.index(max(lengths))]
    # Padded with prompts that run long: the done answers at exactly the share, then just under.
    at_share = round(ended / DROP_DONE_SHARE)
    for size, drops in ((at_share, True), (at_share + 1, False)):
        prompts = MIXED + [longest] * (size - len(MIXED))
        assert (ended >= DROP_DONE_SHARE * size) is drops
        rows = fed_rows(model, partial(generate, model, prompts, max_new_tokens=20, eos_id=eos))
        assert rows[DONE_CHECK_EVERY] == (size - ended if drops else size)

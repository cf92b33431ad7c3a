"""The server's pure parts: chats rendered as trained, stop strings, top-p, who may connect."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import chisquare

from lit_sft.errors import InvalidInput
from lit_sft.prompts import prompt_style
from lit_sft.serving.limits import check_exposure, is_loopback
from lit_sft.serving.render import render_chat
from lit_sft.serving.sampling import SamplingParams, choose_tokens, sample_row, top_p_filter
from lit_sft.serving.text import TextStream
from lit_sft.tokenizer import Tokenizer


@pytest.mark.parametrize("style", ["alpaca", "phi3", "chatml"])
def test_one_user_message_is_the_training_prompt(style: str) -> None:
    s = prompt_style(style)
    user = {"role": "user", "content": "Sort the list.", "input": "3, 1, 2"}
    entry = {"instruction": "Sort the list.", "input": "3, 1, 2"}
    assert render_chat(s, [user]) == s.prompt(entry)
    assert render_chat(s, [{"role": "user", "content": "Hi"}]) == s.prompt({"instruction": "Hi"})
    system = {"role": "system", "content": "Be brief."}
    assert render_chat(s, [system, user]) == s.prompt({**entry, "system": "Be brief."})


def test_system_messages_by_hand() -> None:
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert render_chat(prompt_style("chatml"), chat) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert render_chat(prompt_style("phi3"), chat) == "<|user|>\nHi\n<|assistant|>:\n"


def test_earlier_turns_are_whole_examples_ended_by_end_of_text() -> None:
    s = prompt_style("alpaca")
    chat = [
        {"role": "user", "content": "One"},
        {"role": "assistant", "content": [{"type": "text", "text": "1"}]},
        {"role": "user", "content": "Two"},
    ]
    expected = (
        s.prompt({"instruction": "One"}) + "1<|endoftext|>" + s.prompt({"instruction": "Two"})
    )
    assert render_chat(s, chat) == expected


@pytest.mark.parametrize(
    ("chat", "message"),
    [
        ([], "messages is empty"),
        ([{"role": "tool", "content": "x"}], "messages[0].role is 'tool'"),
        ([{"role": "user", "content": 3}], "messages[0].content must be"),
        ([{"role": "assistant", "content": "x"}], "follows no user message"),
        ([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], "last message"),
    ],
)
def test_malformed_chats_are_refused(chat: list[dict], message: str) -> None:
    with pytest.raises(InvalidInput, match=message.replace("[", r"\[").replace("]", r"\]")):
        render_chat(prompt_style("alpaca"), chat)


def pieces_of(text: str, stop: list[str]) -> tuple[list[str], bool]:
    """The pieces a TextStream releases for `text` fed token by token, and whether it stopped."""
    tokenizer = Tokenizer()
    stream = TextStream(tokenizer, stop)
    pieces = []
    for token in tokenizer.encode(text):
        pieces.append(stream.push(token))
        if stream.stopped:
            return pieces, True
    return [*pieces, stream.finish()], False


def test_text_is_cut_before_a_stop_string_spanning_tokens() -> None:
    pieces, stopped = pieces_of("The answer is 42. ### Next question", ["###", "never"])
    assert stopped and "".join(pieces) == "The answer is 42. "
    # No piece ever showed a part of the stop string.
    assert all("#" not in p for p in pieces)


def test_a_possible_stop_start_is_held_back_then_released() -> None:
    # Tokens 'a', ' #', 'b', ' ##', ' c': the '#' and '##' wait until what follows rules '###' out.
    pieces, stopped = pieces_of("a #b ## c", ["###"])
    assert not stopped and pieces == ["a", " ", "#b", " ", "## c", ""]


def test_half_characters_are_held_back() -> None:
    tokenizer = Tokenizer()
    tokens = tokenizer.encode("🤗")
    assert len(tokens) > 1  # the emoji spans tokens
    stream = TextStream(tokenizer)
    assert [stream.push(t) for t in tokens] == [""] * (len(tokens) - 1) + ["🤗"]


def test_top_p_keeps_the_smallest_set_reaching_p_by_hand() -> None:
    logits = torch.log(torch.tensor([[0.2, 0.5, 0.3]]))
    kept = top_p_filter(logits, 0.6).isfinite()
    assert kept.tolist() == [[False, True, True]]  # 0.5 < 0.6, 0.5 + 0.3 >= 0.6
    assert top_p_filter(logits, 0.5).isfinite().tolist() == [[False, True, False]]
    assert top_p_filter(logits, 1.0).isfinite().all()


def test_top_p_samples_follow_the_renormalised_nucleus() -> None:
    logits = torch.log(torch.tensor([[0.1, 0.45, 0.3, 0.15]]))
    generator = torch.Generator().manual_seed(0)
    p = SamplingParams(temperature=1.0, top_p=0.7)
    draws = torch.cat([sample_row(logits, p, generator) for _ in range(3000)])
    counts = torch.bincount(draws, minlength=4).tolist()
    assert counts[0] == counts[3] == 0  # 0.45 + 0.3 >= 0.7: the nucleus is {0.45, 0.3}
    nucleus = [0.45 / 0.75, 0.3 / 0.75]
    assert chisquare(counts[1:3], [3000 * q for q in nucleus]).pvalue > 0.001
    # top_k first: with k = 1 only the most likely is left, whatever top_p allows.
    greedy = SamplingParams(temperature=1.0, top_k=1, top_p=0.99)
    assert {int(sample_row(logits, greedy, generator)) for _ in range(50)} == {1}


def test_each_row_is_drawn_with_its_own_settings_and_seed() -> None:
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(1))
    params = [SamplingParams(), SamplingParams(1.0, seed=7), SamplingParams(1.0, seed=7)]
    tokens = choose_tokens(logits.clone(), params, [p.generator("cpu") for p in params])
    assert tokens[0] == logits[0].argmax()
    alone = torch.multinomial(logits[1:2].softmax(-1), 1, generator=params[1].generator("cpu"))
    assert tokens[1] == alone.item()
    again = choose_tokens(logits[1:2].clone(), params[1:2], [params[1].generator("cpu")])
    assert again.item() == tokens[1]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True),
     ("0.0.0.0", False), ("192.168.1.5", False), ("myhost.example", False)],
)  # fmt: skip
def test_beyond_loopback_only_with_a_key(host: str, loopback: bool) -> None:
    assert is_loopback(host) == loopback
    check_exposure(host, "sk-key")
    if loopback:
        check_exposure(host, None)
    else:
        with pytest.raises(InvalidInput, match="api_key_env"):
            check_exposure(host, None)

"""The engine: requests that join a batch mid-generation get the answers they would get alone."""

from __future__ import annotations

import torch

from lit_sft.generation import generate
from lit_sft.model import GPT, GPTConfig
from lit_sft.serving.engine import Engine, Finished, Job, Piece
from lit_sft.serving.sampling import SamplingParams
from lit_sft.tokenizer import Tokenizer
from tests.helpers.tiny_gpt import TINY
from tests.serving.running import Probe, wait_until


def double_model() -> GPT:
    """The tests' tiny GPT in float64, so "the same tokens" tests the rows, not rounding."""
    model = GPT(GPTConfig(**TINY)).double().eval()
    # Weights of std 0.05 (not GPT-2's 0.02), and 0.5 in the query/key/value projection: sharp
    # attention and varied answers, which hang on every cached key and value.
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            std = 0.5 if "qkv" in name else 0.05
            param.copy_(torch.randn(param.shape, generator=generator, dtype=param.dtype) * std)
        # A random final LayerNorm bias would favour the same few tokens whatever came before.
        model.final_norm.weight.fill_(1.0)
        model.final_norm.bias.zero_()
    return model


def job(prompt: list[int], max_tokens: int, events: list, **sampling: object) -> Job:
    return Job(prompt, max_tokens, SamplingParams(**sampling), events.append)  # type: ignore[arg-type]


def answer(events: list) -> tuple[str, Finished]:
    text = "".join(e.text for e in events if isinstance(e, Piece))
    return text, events[-1]


def test_jobs_joining_at_different_steps_get_their_solo_answers() -> None:
    model, tokenizer = double_model(), Tokenizer()
    probe = Probe(model)
    probe.gate.clear()
    engine = Engine(model, tokenizer, max_batch_size=4, prepack_weights=False).start()
    prompts = {
        "first": tokenizer.encode("Name a colour."),  # 4 tokens
        "one token": tokenizer.encode("Hi"),  # joins after the first step, without a prefill
        "long": tokenizer.encode("Rewrite the sentence in the passive voice, please: " * 2),
        "sampled": tokenizer.encode("Give a synonym of happy."),
    }
    assert len(prompts["one token"]) == 1 and len(prompts["long"]) == 23
    sampling = {"sampled": {"temperature": 1.0, "top_k": 20, "seed": 5}}
    events: dict[str, list] = {name: [] for name in prompts}
    try:
        engine.submit(job(prompts["first"], 40, events["first"]))
        wait_until(lambda: engine.running == 1)
        for name in ("one token", "long", "sampled"):
            engine.submit(job(prompts[name], 24, events[name], **sampling.get(name, {})))
        probe.gate.set()
        wait_until(lambda: all(e and isinstance(e[-1], Finished) for e in events.values()))
    finally:
        engine.stop()
    assert engine.batch_sizes == [1] and engine.joined == 3
    # "one token" joined after the first step; "long" (23 tokens) only once the batch's columns
    # reached 23, after 19 steps (4 prompt columns + 19 tokens), and "sampled", queued behind it,
    # with it: 19 steps of 1 then 2 rows, two prefills on the side, then 4 rows.
    assert probe.rows[:2] == [1, 2] and set(probe.rows[2:19]) == {2}
    assert probe.rows[19:22] == [1, 1, 4]
    for name, prompt in prompts.items():
        max_tokens = 40 if name == "first" else 24
        generator = torch.Generator().manual_seed(5) if name == "sampled" else None
        extra = {"temperature": 1.0, "top_k": 20} if name == "sampled" else {}
        (alone,) = generate(
            model, [prompt], max_new_tokens=max_tokens, generator=generator, **extra
        )
        text, finished = answer(events[name])
        assert text == tokenizer.decode(alone), name
        assert finished.completion_tokens == len(alone), name

"""Prepacked weights for decoding: the same products and tokens, packed once, layers restored."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile

from lit_sft import prepack
from lit_sft.chat import Chat, Sampling
from lit_sft.evaluation.answers import generate_responses
from lit_sft.generation import decode_steps, generate, stream
from lit_sft.model import GPT, GPTConfig
from lit_sft.prepack import PrepackedForward, can_prepack, is_prepacked, prepacked_linears
from lit_sft.prompts import prompt_style

pytestmark = pytest.mark.skipif(
    not torch.backends.mkldnn.is_available(), reason="this torch has no oneDNN"
)

NEVER = -1
PROMPTS = [[5], [7, 8, 9], [1, 2, 3, 4, 5, 6, 7], [11] * 4 + [12] * 8]


def tiny_model(vocab_size: int = 64) -> GPT:
    """A float32 GPT (prepacking takes float32 only); the tokenizer's vocabulary for text."""
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=vocab_size, context_length=48, emb_dim=48, n_layers=2, n_heads=4)
    return GPT(config).eval()


def linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if type(m) is nn.Linear]


class CountingForward(PrepackedForward):
    """Counts reorders and the products that went through the prepacked weight."""

    packed = 0
    prepacked_products = 0

    def __init__(self, linear: nn.Linear, max_rows: int) -> None:
        super().__init__(linear, max_rows)
        CountingForward.packed += 1

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        CountingForward.prepacked_products += x.numel() <= self.max_rows * x.shape[-1]
        return super().__call__(x)


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> type[CountingForward]:
    CountingForward.packed = CountingForward.prepacked_products = 0
    monkeypatch.setattr(prepack, "PrepackedForward", CountingForward)
    return CountingForward


def ops_run(run: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, set[str]]:
    """`run()`'s result and the names of the operators it ran."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        result = run()
    return result, {event.key for event in prof.key_averages()}


@pytest.mark.parametrize("shape", [(1, 48), (3, 48), (3, 1, 48)])
def test_few_rows_go_through_the_prepacked_weight_and_match_the_layer(shape) -> None:
    torch.manual_seed(1)
    linear = nn.Linear(48, 80)
    x = torch.randn(shape)
    forward = PrepackedForward(linear, max_rows=3)
    with torch.inference_mode():
        packed, ops = ops_run(lambda: forward(x))
        plain = F.linear(x, linear.weight, linear.bias)
    torch.testing.assert_close(packed, plain)
    # oneDNN's kernel, not the layer's own.
    assert "mkldnn::_linear_pointwise" in ops


def test_more_rows_than_packed_for_run_the_layers_own_product() -> None:
    torch.manual_seed(1)
    linear = nn.Linear(48, 80)
    x = torch.randn(2, 5, 48)
    with torch.inference_mode():
        result, ops = ops_run(lambda: PrepackedForward(linear, max_rows=3)(x))
        assert torch.equal(result, linear(x))
    assert "mkldnn::_linear_pointwise" not in ops


def test_layers_are_prepacked_inside_and_restored_after() -> None:
    model = tiny_model()
    names = list(model.state_dict())
    before = {name: t.clone() for name, t in model.state_dict().items()}
    with prepacked_linears(model, max_rows=4):
        assert all(is_prepacked(linear) for linear in linears(model))
        assert list(model.state_dict()) == names
    assert not any(is_prepacked(linear) for linear in linears(model))
    assert all(torch.equal(before[n], t) for n, t in model.state_dict().items())
    with pytest.raises(RuntimeError), prepacked_linears(model, max_rows=4):
        raise RuntimeError("a failing generation")
    assert not any(is_prepacked(linear) for linear in linears(model))


def test_disabled_or_unsupported_weights_are_left_alone() -> None:
    model = tiny_model()
    with prepacked_linears(model, max_rows=4, enabled=False):
        assert not any(is_prepacked(linear) for linear in linears(model))
    model.double()
    with prepacked_linears(model, max_rows=4):
        assert not any(is_prepacked(linear) for linear in linears(model))
    assert not can_prepack(torch.empty(4, 4, device="meta"))
    assert not can_prepack(torch.empty(4))
    assert can_prepack(torch.empty(4, 4))


def test_a_nested_generation_reuses_the_enclosing_weights(counting) -> None:
    model = tiny_model()
    with prepacked_linears(model, max_rows=4):
        outer = [vars(linear)["forward"] for linear in linears(model)]
        generate(model, PROMPTS, max_new_tokens=3, eos_id=NEVER)
        assert [vars(linear)["forward"] for linear in linears(model)] == outer
    assert counting.packed == len(outer)


def test_prepacked_decoding_gives_the_plain_and_the_uncached_tokens(counting) -> None:
    model = tiny_model()
    packed = generate(model, PROMPTS, max_new_tokens=16, eos_id=NEVER)
    # The head's product on the prompt, then every product of the 15 decode steps (2 blocks of 4
    # and the head); the prompt's blocks keep MKL's GEMM (48 rows).
    assert counting.prepacked_products == 1 + 15 * (2 * 4 + 1)
    counting.prepacked_products = 0
    plain = generate(model, PROMPTS, max_new_tokens=16, eos_id=NEVER, prepack_weights=False)
    assert counting.prepacked_products == 0
    uncached = generate(model, PROMPTS, max_new_tokens=16, eos_id=NEVER, use_cache=False)
    assert packed == plain == uncached
    assert len({tuple(answer) for answer in packed}) > 1
    assert not any(is_prepacked(linear) for linear in linears(model))


def test_a_stream_left_early_restores_the_layers() -> None:
    model = tiny_model()
    steps = decode_steps(
        model, PROMPTS, max_new_tokens=10, eos_id=NEVER, temperature=0.0, top_k=None, generator=None
    )
    next(steps)
    assert is_prepacked(model.blocks[0].mlp.fc)
    steps.close()
    assert not any(is_prepacked(linear) for linear in linears(model))


def test_a_chat_session_packs_once_for_all_its_messages(counting) -> None:
    model = tiny_model(vocab_size=50257)
    chat = Chat(model, prompt_style("alpaca"), Sampling(max_new_tokens=4))
    out = io.StringIO()
    chat.session(io.StringIO("Name a colour.\nName a number.\n"), out)
    assert counting.packed == len(linears(model)) and counting.prepacked_products > 0
    assert out.getvalue().count(">>> ") == 3  # two answered, then the end of input
    assert not any(is_prepacked(linear) for linear in linears(model))
    counting.packed = 0
    Chat(model, prompt_style("alpaca"), Sampling(max_new_tokens=4), prepack_weights=False).session(
        io.StringIO("Name a colour.\n"), io.StringIO()
    )
    assert counting.packed == 0


@pytest.mark.parametrize("prepack_weights", [True, False])
def test_an_evaluation_packs_once_for_all_its_batches(
    counting, tmp_path: Path, prepack_weights: bool
) -> None:
    model = tiny_model(vocab_size=50257)
    entries = [{"instruction": f"Repeat {i}.", "input": "", "output": str(i)} for i in range(5)]
    args = dict(batch_size=2, max_new_tokens=3, progress=False, prepack_weights=prepack_weights)
    generate_responses(model, entries, prompt_style("alpaca"), tmp_path / "a.json", **args)
    assert counting.packed == (len(linears(model)) if prepack_weights else 0)
    assert not any(is_prepacked(linear) for linear in linears(model))


def test_stream_takes_the_option(counting) -> None:
    model = tiny_model()
    tokens = list(stream(model, [1, 2, 3], max_new_tokens=5, eos_id=NEVER, prepack_weights=False))
    assert counting.packed == 0
    assert tokens == list(stream(model, [1, 2, 3], max_new_tokens=5, eos_id=NEVER))
    assert counting.packed == len(linears(model))


def test_compiled_blocks_keep_their_own_layers() -> None:
    model = tiny_model()
    model.blocks[0].compile(dynamic=True)  # compiles lazily: nothing runs here
    with prepacked_linears(model, max_rows=4):
        assert not any(is_prepacked(linear) for linear in linears(model.blocks[0]))
        assert all(is_prepacked(linear) for linear in linears(model.blocks[1]))
        assert is_prepacked(model.out_head)

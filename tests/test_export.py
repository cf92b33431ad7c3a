"""The exported folder serves: transformers' tokenizer and pipeline agree with lit_sft."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoTokenizer, GPT2LMHeadModel, pipeline

from lit_sft.export import export_for_serving, main
from lit_sft.generation import generate
from lit_sft.model import GPT, GPTConfig
from lit_sft.run_dir import RunDir
from lit_sft.tokenizer import Tokenizer
from tests.helpers.config import TINY_RUN, compose_config
from tests.helpers.gpt2 import randomize

TEXTS = [
    "Hello, world!",
    "  leading spaces, trailing space ",
    "### Instruction:\nRewrite the sentence.\n\n### Response:\nThe cake was baked.<|endoftext|>",
    "naïve café — 日本語のテキスト 🤗 ümlaut",
    "numbers 12345 and 3.14159, tabs\tand\r\nCRLF",
    "<|endoftext|><|endoftext|>end",
    "spaces before punctuation , . ! ? and contractions do n't 's",
]


def tiny_gpt(seed: int = 0) -> GPT:
    config = GPTConfig(vocab_size=50257, context_length=64, emb_dim=32, n_layers=2, n_heads=2)
    model = GPT(config).eval()
    randomize(model, seed)
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[GPT, Path]:
    model, out = tiny_gpt(), tmp_path_factory.mktemp("export")
    export_for_serving(model, out)
    return model, out


def test_auto_tokenizer_encodes_and_decodes_like_tiktoken(exported: tuple[GPT, Path]) -> None:
    _, out = exported
    tokenizer = Tokenizer()
    for fast in (True, False):
        hf = AutoTokenizer.from_pretrained(out, use_fast=fast)
        assert hf.eos_token_id == hf.bos_token_id == 50256
        for text in TEXTS:
            ids = tokenizer.encode(text)
            assert hf(text)["input_ids"] == ids, (fast, text)
            assert hf.decode(ids) == text, (fast, text)


def test_pipeline_greedy_output_equals_lit_sft_generation(exported: tuple[GPT, Path]) -> None:
    model, out = exported
    tokenizer = Tokenizer()
    prompt = "### Instruction:\nName a colour.\n\n### Response:\n"
    (ours,) = generate(model, [tokenizer.encode(prompt)], max_new_tokens=20)
    generator = pipeline("text-generation", model=str(out), device="cpu")
    (answer,) = generator(prompt, max_new_tokens=20, return_full_text=False)
    assert len(ours) == 20  # no early end-of-text: twenty tokens compared
    assert answer["generated_text"] == tokenizer.decode(ours)


def lightning_checkpoint(model: GPT, path: Path) -> Path:
    """A checkpoint in the layout lit_sft's Lightning module saves (`model.` tensors)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {f"model.{name}": tensor for name, tensor in model.state_dict().items()}
    torch.save({"state_dict": state, "global_step": 7}, path)
    return path


def test_command_exports_any_checkpoint_of_a_run(tmp_path: Path) -> None:
    cfg = compose_config(TINY_RUN, tmp_path / "run")
    run = RunDir(tmp_path / "run")
    run.config.parent.mkdir(parents=True)
    OmegaConf.save(cfg, run.config)
    arch = OmegaConf.to_container(cfg.model.arch, resolve=True)
    model = GPT(GPTConfig(**arch)).eval()
    randomize(model, 1)
    best = lightning_checkpoint(model, run.checkpoints / "best-step7.ckpt")
    ids = torch.tensor([Tokenizer().encode("Reverse the word: lamp")])

    for source in (best, run.path):  # a run without model.safetensors: its last.ckpt
        if source == run.path:
            lightning_checkpoint(model, run.last_checkpoint)
        out = tmp_path / f"out-{source.name}"
        main([str(source), str(out)])
        hf = GPT2LMHeadModel.from_pretrained(out).eval()
        with torch.no_grad():
            torch.testing.assert_close(hf(ids).logits, model(ids), rtol=0, atol=1e-4)
        assert AutoTokenizer.from_pretrained(out).model_max_length == arch["context_length"]


def test_bare_file_needs_a_model_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = compose_config(["model=gpt2-tiny"])
    model = GPT(GPTConfig(**OmegaConf.to_container(cfg.model.arch, resolve=True))).eval()
    randomize(model, 2)
    file = tmp_path / "weights.pt"
    torch.save(model.state_dict(), file)
    with pytest.raises(SystemExit) as stopped:
        main([str(file), str(tmp_path / "out")])
    assert stopped.value.code == 2
    assert capsys.readouterr().err == (
        "error: a weights file outside a run folder needs its size: pass --model gpt2-small "
        "(or gpt2-medium, gpt2-large, gpt2-xl, gpt2-tiny)\n"
    )
    main([str(file), str(tmp_path / "out"), "--model", "gpt2-tiny"])
    hf = GPT2LMHeadModel.from_pretrained(tmp_path / "out").eval()
    ids = torch.tensor([[1, 2, 3, 50256]])
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids), rtol=0, atol=1e-4)
    with pytest.raises(SystemExit):
        main([str(tmp_path), str(tmp_path / "out2")])
    assert "is not a run folder (it has no .hydra/config.yaml)" in capsys.readouterr().err

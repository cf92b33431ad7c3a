"""`python evaluate.py ... judge=openai judge.url=<served model>`: the served model judges a run."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

from lit_sft.checkpoints import export_hf
from lit_sft.model import GPT, GPTConfig
from lit_sft.run_dir import RunDir
from lit_sft.tokenizer import Tokenizer
from tests.helpers.config import REPO, TINY_RUN, compose_config, save_run_config
from tests.helpers.scripts import run_script, script_env
from tests.helpers.tiny_gpt import TINY
from tests.serving.running import NAME, running_server


def always_says(text: str) -> GPT:
    """A GPT whose every next token is `text`'s one token: its final LayerNorm outputs a
    constant vector, which the head maps onto that token alone."""
    (token,) = Tokenizer().encode(text)
    model = GPT(GPTConfig(**{**TINY, "context_length": 512})).eval()  # the judge prompt fits
    with torch.no_grad():
        model.final_norm.weight.zero_()
        model.final_norm.bias.zero_()
        model.final_norm.bias[0] = 1.0
        model.out_head.weight.zero_()
        model.out_head.weight[token, 0] = 1.0
    return model


def test_the_served_model_is_evaluate_pys_judge(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = save_run_config(compose_config(TINY_RUN, run), run)
    arch = OmegaConf.to_container(cfg.model.arch, resolve=True)
    torch.manual_seed(0)
    export_hf(GPT(GPTConfig(**arch)).eval(), run)
    # max_tokens=1: the judge's reply is the one token "85", which evaluate reads as the score.
    with running_server(always_says("85"), max_tokens=1) as judge:
        args = [f"run_dir={run}", "judge=openai", f"judge.url={judge.url}", f"judge.model={NAME}"]
        args += ["limit=3", "max_new_tokens=4", "batch_size=4"]
        done = run_script("evaluate.py", *args, env=script_env(PYTHONPATH=str(REPO)))
        judged = sum(judge.engine.batch_sizes)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = RunDir(run).read_eval_summary()
    assert summary is not None
    assert (summary["entries"], summary["scored"], summary["failures"]) == (3, 3, 0)
    assert summary["mean"] == 85.0 and judged == 3

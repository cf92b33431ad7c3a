"""`python -m lit_sft.export <run> --push-to-hub`: the folder and its model card reach the Hub."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lit_sft.checkpoints import export_hf
from lit_sft.export import main
from lit_sft.model import GPT, GPTConfig
from tests.helpers.config import TINY_RUN, compose_config
from tests.helpers.hub_server import HubServer, set_hf_endpoint

SUMMARY = {"train_loss": 0.2991, "val_loss": 0.6572, "val_response_loss": 0.7001, "steps": 4}
EVALUATION = {"metric": "judge", "entries": 110, "scored": 110, "mean": 49.45, "ci95": [45.1, 53.8]}


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """A finished, evaluated run folder of a tiny model (chatml style, LoRA)."""
    folder = tmp_path / "run"
    cfg = compose_config([*TINY_RUN, "prompt=chatml", "adapter=lora", "module.lr=0.0003"], folder)
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")
    arch = OmegaConf.to_container(cfg.model.arch, resolve=True)
    torch.manual_seed(0)
    export_hf(GPT(GPTConfig(**arch)).eval(), folder)
    (folder / "summary.json").write_text(json.dumps(SUMMARY))
    scored = folder / "eval" / "greedy-max256" / "judge-ollama-llama3"  # as evaluate.py keys it
    scored.mkdir(parents=True)
    (scored.parent / "settings.json").write_text("{}")
    (scored / "settings.json").write_text("{}")
    judge = {"scorer": "judge", "api": "ollama", "model": "llama3"}
    (scored / "summary.json").write_text(json.dumps({**EVALUATION, "scorer": judge}))
    # What evaluate.py saves beside its results: its own config, whose data group names the prompt
    # style through ${prompt.name}, which evaluating a run leaves null.
    evaluated = compose_config([], folder, config_name="evaluate")
    (folder / "eval" / ".hydra").mkdir()
    OmegaConf.save(evaluated, folder / "eval" / ".hydra" / "config.yaml")
    return folder


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    server = HubServer().start()
    server.token = "hf_write"
    set_hf_endpoint(monkeypatch, server.url)
    yield server
    server.stop()


def test_the_run_folder_and_its_card_are_uploaded(
    run: Path, hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_write")
    out = tmp_path / "out"
    main([str(run), str(out), "--push-to-hub", "me/tiny-sft", "--private"])
    assert hub.private == {"me/tiny-sft": True}
    (commit,) = hub.commits
    assert (commit.repo, commit.revision) == ("me/tiny-sft", "main")
    hosted = hub.repos["/me/tiny-sft"]["main"]
    assert set(commit.paths) == set(hosted) == {p.name for p in out.iterdir()}
    for name in ("model.safetensors", "config.json", "tokenizer_config.json", "README.md"):
        assert hosted[name].data == (out / name).read_bytes(), name
    assert "chat_template" in json.loads(hosted["tokenizer_config.json"].data)
    card = hosted["README.md"].data.decode()
    assert card.startswith("---\nlicense: mit\n")
    for fact in [
        "# me/tiny-sft",
        "- base model: gpt2-tiny (random initialisation)",
        "- data: synthetic (200 entries)",
        "- method: supervised finetuning (SFT)",
        '- adapter: {"name": "lora", ',
        "- lr: 0.0003",
        "- data.batch_size: 8",
        "- trainer.max_steps: 4",
        "<|im_start|>user\n<instruction><|im_end|>\n<|im_start|>assistant\n",
        "- train: 0.2991",
        "- validation: 0.6572",
        "- validation (response): 0.7001",
        "- mean score: 49.45 (95 % interval 45.10-53.80)",
        "- judge: llama3 through the ollama API",
        'AutoModelForCausalLM.from_pretrained("me/tiny-sft")',
        "## License",
    ]:
        assert fact in card, fact
    # A second push to the same repository adds a commit.
    main([str(run), "--push-to-hub", "me/tiny-sft"])
    assert len(hub.commits) == 2 and hub.private == {"me/tiny-sft": True}


def test_a_refused_token_is_one_line(
    run: Path, hub: HubServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(SystemExit) as stopped:
        main([str(run), "--push-to-hub", "me/tiny-sft"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == (
        "error: the Hub refused the token (HTTP 401) for me/tiny-sft; set HF_TOKEN to a token "
        "with write access (or run `hf auth login`)"
    )
    assert hub.commits == [] and hub.requests[-1].authorization == "Bearer hf_wrong"

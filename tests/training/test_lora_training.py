from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

from lit_sft.cli.train import train
from lit_sft.export import main as export_main
from lit_sft.model import GPT, GPTConfig
from tests.helpers.config import TINY_RUN, compose_config, scalars

# gpt2-tiny narrowed as in TINY_RUN: emb 32, 2 layers; rank 4 on the four default targets.
CONTEXT = 256
TINY_LORA_PARAMETERS = 2 * 4 * ((32 + 96) + (32 + 32) + (32 + 128) + (128 + 32))
LORA = [
    "adapter=lora",
    "adapter.rank=4",
    "adapter.dropout=0.1",  # dropout draws random numbers: the resume must restore them too
    "module.lr=1e-2",
    "data.synthetic_size=100",
    "trainer.max_steps=6",
    "trainer.val_check_interval=2",
    "callbacks.resume_checkpoint.every_n_train_steps=2",
]


@pytest.fixture(scope="module")
def base_weights(tmp_path_factory) -> Path:
    """A random gpt2-tiny (narrowed) saved as a file, the base the adapters are trained on."""
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(vocab_size=50257, context_length=CONTEXT, emb_dim=32, n_layers=2, n_heads=2)
    )
    path = tmp_path_factory.mktemp("base") / "base.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return path


def lora_config(run_dir: Path, base: Path, *extra: str):
    return compose_config([*TINY_RUN, *LORA, f"model.weights={base}", *extra], run_dir)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, base_weights: Path) -> Path:
    run_dir = tmp_path_factory.mktemp("lora") / "run"
    cfg = lora_config(run_dir, base_weights)
    train(cfg)
    # Hydra, not train(), writes the composed config; do what it does.
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    return run_dir


def test_a_lora_run_records_its_base_and_trains_only_the_adapters(
    lora_run: Path, base_weights: Path
) -> None:
    summary = json.loads((lora_run / "summary.json").read_text())
    assert summary["trainable_parameters"] == TINY_LORA_PARAMETERS
    block = 64 + (32 * 96 + 96) + (32 * 32 + 32) + 64 + (32 * 128 + 128) + (128 * 32 + 32)
    base = 50257 * 32 * 2 + CONTEXT * 32 + 2 * block + 64
    assert summary["parameters"] == base + TINY_LORA_PARAMETERS
    assert summary["base_weights"] == str(base_weights) and summary["adapter"] == "lora"
    checkpoint = torch.load(lora_run / "checkpoints/last.ckpt", weights_only=True)
    # The adapters and their AdamW state; not a second copy of the frozen base.
    assert all(k.endswith((".lora_a", ".lora_b")) for k in checkpoint["state_dict"])
    assert sum(t.numel() for t in checkpoint["state_dict"].values()) == TINY_LORA_PARAMETERS
    state = checkpoint["optimizer_states"][0]["state"]
    assert sum(s["exp_avg"].numel() for s in state.values()) == TINY_LORA_PARAMETERS
    assert checkpoint["base_weights"] == str(base_weights)
    # Only adapters trained: the merged export differs from the base only in the target weights.
    base, merged = load_file(base_weights), load_file(lora_run / "model.safetensors")
    assert torch.equal(merged["transformer.wte.weight"], base["tok_emb.weight"])
    assert torch.equal(merged["transformer.h.1.ln_2.bias"], base["blocks.1.norm2.bias"])
    assert not torch.equal(
        merged["transformer.h.1.mlp.c_fc.weight"].t(), base["blocks.1.mlp.fc.weight"]
    )


def test_a_killed_lora_run_resumes_exactly(
    lora_run: Path, base_weights: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    crash = [
        "+callbacks.crash._target_=tests.helpers.callbacks.CrashAt",
        "+callbacks.crash.step=5",
    ]
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(lora_config(run_dir, base_weights, *crash))
    resumed = train(lora_config(run_dir, base_weights, "ckpt_path=last"))
    assert resumed["steps"] == 6
    straight = dict(scalars(lora_run, "train/loss"))
    again = dict(scalars(run_dir, "train/loss"))
    assert straight.keys() == again.keys() and len(straight) == 6
    for step, loss in straight.items():
        assert abs(again[step] - loss) <= 1e-6, step
    weights, reference = (
        load_file(run_dir / "model.safetensors"),
        load_file(lora_run / "model.safetensors"),
    )
    for name, tensor in weights.items():
        assert (tensor - reference[name]).abs().max() <= 1e-6, name


def test_resuming_on_other_base_weights_is_refused(
    lora_run: Path, base_weights: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other.safetensors"
    other.write_bytes(base_weights.read_bytes())
    run_dir = shutil.copytree(lora_run, tmp_path / "run")
    with pytest.raises(
        ValueError, match=r"trained on base weights .*base\.safetensors, this run loads .*other"
    ):
        train(lora_config(run_dir, other, "ckpt_path=last", "trainer.max_steps=8"))


def test_export_writes_the_adapters_alone(lora_run: Path, tmp_path: Path, capsys) -> None:
    export_main([str(lora_run), str(tmp_path / "adapters"), "--adapters-only"])
    tensors = load_file(tmp_path / "adapters" / "adapter_model.safetensors")
    checkpoint = torch.load(lora_run / "checkpoints/last.ckpt", weights_only=True)
    assert tensors.keys() == {k.removeprefix("model.") for k in checkpoint["state_dict"]}
    assert torch.equal(
        tensors["blocks.1.mlp.fc.lora_b"], checkpoint["state_dict"]["model.blocks.1.mlp.fc.lora_b"]
    )
    config = json.loads((tmp_path / "adapters" / "adapter_config.json").read_text())
    assert config == {
        "rank": 4,
        "alpha": 32,
        "dropout": 0.1,
        "targets": ["qkv", "attn_proj", "fc", "mlp_proj"],
        "base_weights": checkpoint["base_weights"],
        "scaling": 8.0,
    }
    export_main([str(lora_run), str(tmp_path / "model")])
    for name in ("model.safetensors", "config.json"):
        assert (tmp_path / "model" / name).read_bytes() == (lora_run / name).read_bytes()


def test_adapters_only_on_a_full_run_is_one_clear_line(tiny_config, tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "full"
    summary = train(tiny_config("trainer.max_steps=1", run_dir=run_dir))
    assert summary["trainable_parameters"] == summary["parameters"]
    with pytest.raises(SystemExit) as exit_info:
        export_main([str(run_dir), str(tmp_path / "out"), "--adapters-only"])
    assert exit_info.value.code == 2
    assert "was not trained with adapter=lora" in capsys.readouterr().err


def test_evaluate_and_chat_work_on_a_lora_run_unchanged(lora_run: Path, tmp_path: Path) -> None:
    from lit_sft.cli.chat import build_chat
    from lit_sft.cli.evaluate import evaluate
    from tests.evaluation.test_evaluation import eval_config

    run_dir = shutil.copytree(lora_run, tmp_path / "run")
    args = ["scorer=exact_match", "limit=4", "max_new_tokens=4", "batch_size=4"]
    assert evaluate(eval_config(f"run_dir={run_dir}", *args))["entries"] == 4
    chat = build_chat(
        compose_config([f"run_dir={run_dir}", "max_new_tokens=5"], config_name="chat")
    )
    merged = load_file(run_dir / "model.safetensors")
    qkv = chat.model.blocks[1].attn.qkv.weight
    assert torch.equal(qkv, merged["transformer.h.1.attn.c_attn.weight"].t())
    out = io.StringIO()
    chat.reply("Reverse the word 'cat'.", "", out)
    assert out.getvalue() == "".join(chat.answer("Reverse the word 'cat'.")) + "\n"


def test_loading_a_lora_checkpoint_as_a_model_says_what_it_holds(lora_run: Path) -> None:
    from lit_sft.checkpoints import load_state_dict_file

    with pytest.raises(
        ValueError, match=r"last\.ckpt holds only LoRA adapters.*model\.safetensors"
    ):
        load_state_dict_file(lora_run / "checkpoints" / "last.ckpt")

"""The model card (README.md) of an exported run: what it is, how it was made, how it scored."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lit_sft.prompts import prompt_style
from lit_sft.serving.render import render_chat

LICENSE = "mit"  # GPT-2's weights (OpenAI, MIT); the book's data is Apache-2.0
LOSSES = {
    "train_loss": "train",
    "val_loss": "validation",
    "val_response_loss": "validation (response)",
}


@dataclass(frozen=True)
class RunFacts:
    """What a card tells about a run: its resolved config, summary and evaluation (plain dicts)."""

    config: Mapping[str, Any]
    summary: Mapping[str, Any]
    evaluation: Mapping[str, Any] | None = None  # eval/eval-summary.json
    eval_config: Mapping[str, Any] | None = None  # eval/.hydra/config.yaml


def base_model(config: Mapping[str, Any]) -> str:
    """Where the weights training started from: a Hub repository, a file, or random init."""
    model = config["model"]
    if model.get("hub_repo"):
        return str(model["hub_repo"])
    return str(model.get("weights") or f"{model.get('name', 'gpt2')} (random initialisation)")


def _settings(config: Mapping[str, Any]) -> list[str]:
    module, data, trainer = (
        config.get("module", {}),
        config.get("data", {}),
        config.get("trainer", {}),
    )
    method = "DPO" if "dpo" in config else "supervised finetuning (SFT)"
    lines = [f"- method: {method}"]
    if "dpo" in config:
        lines.append(f"- DPO: {json.dumps(config['dpo'])}")
    adapter = config.get("adapter", {})
    if adapter.get("name", "none") != "none":
        lines.append(f"- adapter: {json.dumps(adapter)}")
    for key in ("lr", "weight_decay", "lr_schedule", "warmup_steps"):
        if key in module:
            lines.append(f"- {key}: {module[key]}")
    for key in ("batch_size", "mask_instructions", "packing"):
        if key in data:
            lines.append(f"- data.{key}: {data[key]}")
    for key in ("max_epochs", "max_steps", "precision"):
        if key in trainer:
            lines.append(f"- trainer.{key}: {trainer[key]}")
    lines.append(f"- seed: {config.get('seed')}")
    return lines


def _evaluation(facts: RunFacts) -> list[str]:
    ev = facts.evaluation
    if not ev:
        return ["Not evaluated (`python evaluate.py run_dir=<run>` adds the scores)."]
    lines = [
        f"- metric: {ev.get('metric')}; entries {ev.get('entries')}, scored {ev.get('scored')}"
    ]
    if ev.get("mean") is not None:
        ci = ev.get("ci95")
        interval = f" (95 % interval {ci[0]:.2f}-{ci[1]:.2f})" if ci else ""
        lines.append(f"- mean score: {ev['mean']:.2f}{interval}")
    # The summary names its judge (`scorer`); older evaluations left it in their Hydra config.
    scorer = ev.get("scorer")
    judge = scorer if isinstance(scorer, Mapping) else (facts.eval_config or {}).get("judge")
    if ev.get("metric") == "judge" and judge:
        lines.append(f"- judge: {judge.get('model')} through the {judge.get('api')} API")
    return lines


def model_card(facts: RunFacts, repo_id: str) -> str:
    """The card's Markdown, with the Hub's metadata block first."""
    config = facts.config
    style = config["prompt"]["name"]
    data = config.get("data", {})
    dataset = data.get("path") or f"synthetic ({data.get('synthetic_size')} entries)"
    example = render_chat(prompt_style(style), [{"role": "user", "content": "<instruction>"}])
    losses = [
        f"- {name}: {facts.summary[key]:.4f}"
        for key, name in LOSSES.items()
        if key in facts.summary
    ]
    front = [
        "---",
        f"license: {LICENSE}",
        "library_name: transformers",
        "pipeline_tag: text-generation",
    ]
    front += ["tags: [lit_sft, gpt2]", "---", ""]
    return "\n".join(
        [
            *front,
            f"# {repo_id}",
            "",
            f"GPT-2 ({config['model'].get('name')}) instruction-finetuned with lit_sft.",
            "",
            "## Training",
            f"- base model: {base_model(config)}",
            f"- data: {dataset}",
            *_settings(config),
            "",
            "## Prompt template",
            f"The `{style}` style (the tokenizer's chat template renders it):",
            "```",
            example,
            "```",
            "",
            "## Final losses",
            *(losses or ["No summary.json in the run."]),
            "",
            "## Evaluation",
            *_evaluation(facts),
            "",
            "## How to load it",
            "```python",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")',
            f'model = AutoModelForCausalLM.from_pretrained("{repo_id}")',
            'messages = [{"role": "user", "content": "Name a colour."}]',
            "ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, "
            'return_tensors="pt")',
            "print(tokenizer.decode(model.generate(ids, max_new_tokens=64)[0][ids.shape[1]:]))",
            "```",
            "A GGUF file, if present, runs in llama.cpp; `ollama create <name> -f Modelfile` "
            "makes it an Ollama model.",
            "",
            "## License",
            "MIT, as GPT-2's weights; the book's instruction data is Apache-2.0 "
            "(rasbt/LLMs-from-scratch).",
            "",
        ]
    )

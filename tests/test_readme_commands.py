"""The README's commands are a contract: every Hydra command it shows composes as written.

Each `python train.py ...`, `evaluate.py`, `chat.py`, `serve.py` and `python -m lit_sft.preferences`
line in the README's shell blocks is composed against conf/ (groups, keys and values as Hydra reads
them); a renamed key or group, or an override the config no longer has, fails here by its line.
"""

from __future__ import annotations

import re
import shlex

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

from tests.helpers.config import REPO

CONFIGS = {
    ("train.py",): "config",
    ("evaluate.py",): "evaluate",
    ("chat.py",): "chat",
    ("serve.py",): "serve",
    ("-m", "lit_sft.preferences"): "preferences",
}


def shell_commands(markdown: str) -> list[tuple[int, str]]:
    """The (line number, command) of each line of the ```bash blocks, continuations joined."""
    commands, block, pending, start = [], False, "", 0
    for number, line in enumerate(markdown.splitlines(), 1):
        if line.startswith("```"):
            block = line.strip() == "```bash"
            continue
        if not block:
            continue
        start = start or number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        commands.append((start, pending + line))
        pending, start = "", 0
    return commands


def hydra_command(command: str) -> tuple[str, list[str]] | None:
    """The config name and overrides of a README command, or None for other commands.

    Placeholders (`<run>`) become a word; a multirun's comma list becomes its first value (a
    sweep composes as each of its runs does); `hydra.*` overrides configure Hydra, not the job.
    """
    words = shlex.split(re.sub(r"<[^>]*>", "x", command), comments=True)
    if words[:1] != ["python"]:
        return None
    name = next((n for args, n in CONFIGS.items() if tuple(words[1 : 1 + len(args)]) == args), None)
    if name is None:
        return None
    rest = words[1 + (2 if words[1] == "-m" else 1) :]
    multirun = bool(rest) and rest[0] in ("-m", "--multirun")
    overrides = []
    for word in rest[1:] if multirun else rest:
        key, equals, value = word.partition("=")
        if not equals or key.startswith(("hydra.", "hydra/")):
            continue
        if multirun and "," in value and not value.startswith("["):
            value = value.split(",")[0]
        overrides.append(f"{key}={value}")
    return name, overrides


README_COMMANDS = [
    (number, parsed)
    for number, command in shell_commands((REPO / "README.md").read_text())
    if (parsed := hydra_command(command)) is not None
]


def test_the_readme_shows_each_entry_point() -> None:
    assert {name for _, (name, _) in README_COMMANDS} == set(CONFIGS.values())
    assert len(README_COMMANDS) >= 40


@pytest.mark.parametrize(("line", "command"), README_COMMANDS, ids=lambda v: str(v))
def test_readme_command_composes(line: int, command: tuple[str, list[str]]) -> None:
    name, overrides = command
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        compose(config_name=name, overrides=overrides)


def test_a_key_the_config_lacks_fails() -> None:
    # The check can fail: an override of a key no config has is refused as Hydra refuses it.
    name, overrides = hydra_command("python train.py dpo.los=orpo  # a typo")
    with (
        initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"),
        pytest.raises(ConfigCompositionException, match="Could not override 'dpo.los'"),
    ):
        compose(config_name=name, overrides=overrides)


def test_commands_are_read_as_a_shell_reads_them() -> None:
    markdown = "```bash\npython train.py -m a=1,2 \\\n    b=[x,y] hydra.run.dir=d  # note\n```\n"
    assert shell_commands(markdown) == [
        (2, "python train.py -m a=1,2      b=[x,y] hydra.run.dir=d  # note")
    ]
    assert hydra_command(shell_commands(markdown)[0][1]) == ("config", ["a=1", "b=[x,y]"])
    assert hydra_command('python chat.py run_dir=<run> message="Hi, you."') == (
        "chat",
        ["run_dir=x", "message=Hi, you."],
    )
    assert hydra_command("python -m lit_sft.compare a b --out c") is None

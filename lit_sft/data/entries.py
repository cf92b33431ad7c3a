"""Datasets as lists of entries: read (JSON or JSON Lines, file or URL), rename, validate, split."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from lit_sft.errors import InvalidInput, MissingFile
from lit_sft.hub import is_remote, local_copy

Entry = dict[str, str]
SFT_FIELDS = ("instruction", "input", "output")
# Entries that name their split (`"split": "train"`) keep it whatever the fractions say: a pair file
# from `lit_sft.preferences` carries the SFT run's own test split, so both runs score one test set.
SPLIT_FIELD = "split"
SPLITS = ("train", "test", "val")
FORMAT_HINT = (
    'expected a JSON list or JSON Lines of {"instruction": ..., "input": ..., "output": ...} '
    "objects (input optional)"
)


def parse_entries(text: str, source: str) -> list:
    """The entries of a JSON list or of JSON Lines text."""
    if not text.strip():
        raise InvalidInput(f"the dataset is empty, in {source}; {FORMAT_HINT}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    data.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise InvalidInput(
                        f"neither a JSON list nor JSON Lines ({error.msg}), in {source} line "
                        f"{number}; {FORMAT_HINT}"
                    ) from None
    if not isinstance(data, list):
        raise InvalidInput(
            f"the dataset is a JSON {type(data).__name__}, not a list of entries, in {source}; "
            f"{FORMAT_HINT}"
        )
    return data


def validate_entries(
    entries: Sequence, source: str, fields: Sequence[str] = SFT_FIELDS
) -> list[Entry]:
    """The entries after checking each of `fields`; a missing or null `input` becomes ""."""
    if not entries:
        raise InvalidInput(f"the dataset has no entries, in {source}; {FORMAT_HINT}")
    valid = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InvalidInput(
                f"entry {index} is a {type(entry).__name__}, not an object, in {source}; "
                f"{FORMAT_HINT}"
            )
        # Exported datasets often write a missing input as null.
        entry = {**entry, "input": "" if entry.get("input") is None else entry["input"]}
        for field in fields:
            if field not in entry:
                raise InvalidInput(
                    f"entry {index} has no {field!r} field, in {source}; give every entry "
                    f"string fields {', '.join(f for f in fields if f != 'input')} (or read "
                    f"{field!r} from a field of another name: data.fields.{field}=<its name>)"
                )
            if not isinstance(entry[field], str):
                raise InvalidInput(
                    f"entry {index} field {field!r} is a {type(entry[field]).__name__}, not a "
                    f"string, in {source}; make it a JSON string"
                )
        valid.append(entry)
    return valid


def rename_fields(entries: Sequence, field_map: Mapping[str, str], source: str) -> list:
    """Each entry with lit_sft's field names: `field_map` maps one (`instruction`) to the file's
    (`question`); a mapped field missing from an entry is an error naming the mapping."""
    if not field_map:
        return list(entries)
    renamed = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            renamed.append(entry)  # validate_entries says what is wrong with it
            continue
        for ours, theirs in field_map.items():
            if theirs not in entry:
                raise InvalidInput(
                    f"entry {index} has no {theirs!r} field (data.fields.{ours}={theirs}), in "
                    f"{source}; name a field the file has (its fields: {', '.join(entry)})"
                )
        renamed.append({**entry, **{ours: entry[theirs] for ours, theirs in field_map.items()}})
    return renamed


def load_entries(
    path: str,
    cache_dir: str | Path | None = None,
    fields: Sequence[str] = SFT_FIELDS,
    field_map: Mapping[str, str] | None = None,
) -> list[Entry]:
    """The validated entries of a local JSON/JSONL file or of an http(s) URL.

    `field_map` reads each of lit_sft's `fields` from the file's field of another name
    (`{"instruction": "question"}`); `fields` are then checked under lit_sft's names.
    """
    local = local_copy(path, cache_dir) if is_remote(path) else Path(path)
    if not local.is_file():
        raise MissingFile(
            f"dataset file {path} does not exist (absolute: {local.absolute()}); "
            "pass data.path=<a JSON/JSONL file or an http(s) URL>"
        )
    # utf-8-sig: editors on Windows save JSON with a byte-order mark.
    text = local.read_text(encoding="utf-8-sig")
    entries = rename_fields(parse_entries(text, path), field_map or {}, path)
    return validate_entries(entries, path, fields)


def split_entries(
    entries: Sequence[Entry], train_fraction: float = 0.85, test_fraction: float = 0.10
) -> tuple[list[Entry], list[Entry], list[Entry]]:
    """Train, test and validation entries, in file order (as the book splits them).

    Entries that each name their split (`SPLIT_FIELD`) are grouped by it instead.
    """
    tagged = [SPLIT_FIELD in entry for entry in entries]
    if any(tagged):
        return split_by_tag(entries, tagged)
    train_end = int(len(entries) * train_fraction)
    test_end = train_end + int(len(entries) * test_fraction)
    return list(entries[:train_end]), list(entries[train_end:test_end]), list(entries[test_end:])


def split_by_tag(entries: Sequence[Entry], tagged: Sequence[bool]) -> tuple[list[Entry], ...]:
    """Train, test and validation entries as each entry's `split` field says."""
    if not all(tagged):
        raise InvalidInput(
            f"entry {tagged.index(False)} has no {SPLIT_FIELD!r} field but others have; "
            f"give every entry one of {', '.join(SPLITS)}, or none"
        )
    groups: dict[str, list[Entry]] = {name: [] for name in SPLITS}
    for index, entry in enumerate(entries):
        if entry[SPLIT_FIELD] not in groups:
            raise InvalidInput(
                f"entry {index} has {SPLIT_FIELD}={entry[SPLIT_FIELD]!r}; "
                f"expected one of {', '.join(SPLITS)}"
            )
        groups[entry[SPLIT_FIELD]].append(entry)
    return groups["train"], groups["test"], groups["val"]


def check_split_sizes(
    splits: Mapping[str, Sequence[Entry]],
    stage: str | None,
    batch_size: int,
    world_size: int,
    source: str,
) -> None:
    """Stops before a stage whose split is empty, or (train) smaller than one batch."""
    needed = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}
    sizes = ", ".join(f"{name} {len(entries)}" for name, entries in splits.items())
    for split in needed.get(stage or "fit", ()):
        count = len(splits[split])
        if split == "train":
            # Each process draws ceil(count / world_size) entries and drops a partial batch.
            per_process = math.ceil(count / world_size)
            if per_process < batch_size:
                fix = f"pass data.batch_size={per_process} or less, or " if per_process else ""
                raise InvalidInput(
                    f"the train split ({sizes} entries) is smaller than one batch of "
                    f"data.batch_size={batch_size} per process, so no step would be "
                    f"trained, in {source}; {fix}use more data"
                )
        elif count == 0:
            raise InvalidInput(
                f"the {split} split is empty ({sizes} entries), in {source}; use more "
                "entries, or change data.train_fraction / data.test_fraction"
            )

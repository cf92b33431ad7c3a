"""Data checks before training: duplicates within the train split and copies of val/test in it.

Two measures, over each entry's instruction, input and output:
- exact: the same text once lowercased, punctuation dropped and whitespace collapsed (the book's
  `preprocess_text`), field by field;
- near: TF-IDF cosine >= NEAR_THRESHOLD of the three fields joined (scikit-learn: words and word
  pairs hashed by `HashingVectorizer`, weighted by `TfidfTransformer` fitted on all splits, as the
  book's utility weights words); exact duplicates are near ones too.

Counts are entries: `train` counts train entries that duplicate an earlier train entry, `train-val`
and `train-test` count validation / test entries with a copy in the train split (test questions
trained on). `python -m lit_sft.data.check data.path=...` prints them (`lit_sft/cli/check.py`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer

from lit_sft.data.entries import Entry
from lit_sft.errors import InvalidInput
from lit_sft.files import write_json_atomic

NEAR_THRESHOLD = 0.9
HASHED_TERMS = 2**22
BETWEEN = {"train": "train", "train-val": "val", "train-test": "test"}
DEDUP = ("none", "exact", "near")
# Rows of the candidate product held at once: bounds memory on 52k entries.
_CHUNK_ROWS = 4096


def normalise(text: str) -> str:
    """Lowercased, punctuation dropped, whitespace collapsed (the book's `preprocess_text`)."""
    return " ".join(re.sub(r"[^\w\s]", "", text.lower()).split())


def entry_fields(entry: Entry) -> tuple[str, str, str]:
    """The entry's normalised instruction, input and output (a preference pair's: `chosen`)."""
    output = entry["output"] if "output" in entry else entry.get("chosen") or ""
    return normalise(entry["instruction"]), normalise(entry.get("input") or ""), normalise(output)


@dataclass(frozen=True)
class DuplicatePair:
    """A train entry and an entry of `between`'s other split that duplicate each other."""

    between: str
    kind: str
    train: int
    other: int
    similarity: float


@dataclass
class DataCheck:
    """The duplicate pairs found, and the entries they make duplicates (see the module docs)."""

    sizes: dict[str, int]
    pairs: list[DuplicatePair] = field(default_factory=list)
    seconds: float = 0.0
    threshold: float = NEAR_THRESHOLD

    def duplicates(self, between: str, kind: str) -> set[int]:
        """Indices (in the later split) of the entries with a copy: train's later entry, val's."""
        kinds = ("exact",) if kind == "exact" else ("exact", "near")
        return {p.other for p in self.pairs if p.between == between and p.kind in kinds}

    def counts(self) -> dict[str, dict[str, int]]:
        """`{between: {"exact": n, "near": n}}` for train, train-val and train-test."""
        return {
            between: {kind: len(self.duplicates(between, kind)) for kind in ("exact", "near")}
            for between in BETWEEN
        }


def exact_pairs(
    train: Sequence[tuple[str, ...]], other: Sequence[tuple[str, ...]], between: str
) -> list[DuplicatePair]:
    """Each entry of `other` (train itself: each later entry) with the first equal train entry.

    Entries come as their `entry_fields`.
    """
    first: dict[tuple[str, ...], int] = {}
    for index, fields in enumerate(train):
        first.setdefault(fields, index)
    pairs = []
    for index, fields in enumerate(other):
        match = first.get(fields)
        if match is not None and (between != "train" or match < index):
            pairs.append(DuplicatePair(between, "exact", match, index, 1.0))
    return pairs


def prefix_rows(matrix: sparse.csr_matrix, threshold: float) -> sparse.csr_matrix:
    """Each row's rarest terms that any row at cosine >= threshold must share (prefix filtering).

    Rows have unit norm. If a row y shares none of row x's kept terms, x . y is at most the norm of
    x's dropped terms, which is kept below `threshold`: so every pair at or above it shares a kept
    term, and `prefix_rows(X) @ Y.T` finds every candidate (Bayardo et al., "Scaling up all pairs
    similarity search", 2007). Rare terms make that product sparse where `X @ Y.T` is dense.
    """
    coo = matrix.tocoo()
    document_frequency = np.bincount(coo.col, minlength=matrix.shape[1])
    # Per row, the most common terms last; drop from the end while their norm stays < threshold.
    order = np.lexsort((document_frequency[coo.col], coo.row))
    rows, cols, values = coo.row[order], coo.col[order], coo.data[order]
    squares = values**2
    tail = np.cumsum(squares[::-1])[::-1]  # from each term to the end of the whole matrix
    row_end = np.searchsorted(rows, rows, side="right")
    tail_in_row = tail - np.append(tail, 0.0)[row_end]
    keep = tail_in_row >= threshold**2 - 1e-6
    return sparse.csr_matrix((values[keep], (rows[keep], cols[keep])), shape=matrix.shape)


def near_pairs(
    train: sparse.csr_matrix, other: sparse.csr_matrix, between: str, threshold: float
) -> list[DuplicatePair]:
    """The (train row, other row) pairs at TF-IDF cosine >= threshold; within train i < j."""
    prefix = prefix_rows(other, threshold)
    pairs = []
    for start in range(0, other.shape[0], _CHUNK_ROWS):
        candidates = (prefix[start : start + _CHUNK_ROWS] @ train.T).tocoo()
        others, trains = candidates.row + start, candidates.col
        if between == "train":
            others, trains = others[trains < others], trains[trains < others]
        similarity = np.asarray(other[others].multiply(train[trains]).sum(axis=1)).ravel()
        near = similarity >= threshold - 1e-6
        pairs += [
            DuplicatePair(between, "near", int(t), int(o), round(float(s), 4))
            for t, o, s in zip(trains[near], others[near], similarity[near], strict=True)
        ]
    return pairs


def tfidf_rows(fields: Mapping[str, Sequence[tuple[str, ...]]]) -> dict[str, sparse.csr_matrix]:
    """Each split's entries (as `entry_fields`) as unit-norm TF-IDF rows, fitted on all of them."""
    # Every word counts, one letter or digit too (scikit-learn's default skips them): "add 3 4" and
    # "add 5 6" are other questions. Hashed terms: a vocabulary of 52k entries' word pairs took
    # 45 s to build, hashing 6 s; 2^22 buckets keep collisions too rare to move a cosine.
    counts = HashingVectorizer(
        ngram_range=(1, 2),
        token_pattern=r"\b\w+\b",
        n_features=HASHED_TERMS,
        alternate_sign=False,
        norm=None,
        dtype=np.float32,
    ).transform([" ".join(f) for name in fields for f in fields[name]])
    rows = TfidfTransformer().fit_transform(counts).tocsr()
    bounds = np.cumsum([0, *(len(split) for split in fields.values())])
    return {name: rows[bounds[i] : bounds[i + 1]] for i, name in enumerate(fields)}


def check_splits(
    splits: Mapping[str, Sequence[Entry]], threshold: float = NEAR_THRESHOLD
) -> DataCheck:
    """The exact and near duplicates within `splits["train"]` and between it and val / test."""
    began = time.perf_counter()
    check = DataCheck({name: len(entries) for name, entries in splits.items()}, threshold=threshold)
    fields = {name: [entry_fields(e) for e in entries] for name, entries in splits.items()}
    rows = tfidf_rows(fields)
    for between, other in BETWEEN.items():
        if splits.get(other):
            exact = exact_pairs(fields["train"], fields[other], between)
            listed = {(pair.train, pair.other) for pair in exact}
            near = near_pairs(rows["train"], rows[other], between, threshold)
            check.pairs += exact + [p for p in near if (p.train, p.other) not in listed]
    check.seconds = time.perf_counter() - began
    return check


def dedup_train(
    splits: Mapping[str, Sequence[Entry]], mode: str, check: DataCheck | None = None
) -> tuple[list[Entry], dict[str, int]]:
    """The train split without its duplicates and its copies of val/test (`mode` exact or near).

    An entry goes if it duplicates an earlier train entry, or if a validation or test entry has it
    as a copy; validation and test stay as they are. The counts: entries dropped for each reason
    (an entry counted under the first), and kept. `mode="none"` keeps all of them.
    """
    if mode not in DEDUP:
        raise InvalidInput(f"data.dedup={mode!r}: expected one of {', '.join(DEDUP)}")
    train = list(splits["train"])
    if mode == "none":
        return train, {}
    check = check or check_splits(splits)
    kinds = ("exact",) if mode == "exact" else ("exact", "near")
    reasons = {
        "duplicates": {p.other for p in check.pairs if p.between == "train" and p.kind in kinds},
        "copies_of_val": {
            p.train for p in check.pairs if p.between == "train-val" and p.kind in kinds
        },
        "copies_of_test": {
            p.train for p in check.pairs if p.between == "train-test" and p.kind in kinds
        },
    }
    counts, dropped = {}, set()
    for reason, indices in reasons.items():
        counts[reason] = len(indices - dropped)
        dropped |= indices
    kept = [entry for index, entry in enumerate(train) if index not in dropped]
    return kept, {**counts, "kept": len(kept)}


def check_summary(check: DataCheck, dedup: str, dropped: dict[str, int]) -> dict[str, Any]:
    """What summary.json keeps of a check: the counts, the measure and what `dedup` dropped."""
    return {
        **check.counts(),
        "near_threshold": check.threshold,
        "dedup": dedup,
        "dedup_counts": dropped,
        "seconds": round(check.seconds, 2),
    }


def pair_records(check: DataCheck, splits: Mapping[str, Sequence[Entry]]) -> list[dict[str, Any]]:
    """Each pair as a record a reader can judge: the train entry (`a`) and its copy (`b`)."""

    def side(split: str, index: int) -> dict[str, Any]:
        return {"split": split, "index": index, "entry": splits[split][index]}

    return [
        {
            "between": pair.between,
            "kind": pair.kind,
            "similarity": pair.similarity,
            "a": side("train", pair.train),
            "b": side(BETWEEN[pair.between], pair.other),
        }
        for pair in check.pairs
    ]


def write_pairs(path: Path, check: DataCheck, splits: Mapping[str, Sequence[Entry]]) -> None:
    """The pairs (`pair_records`) into a JSON file."""
    write_json_atomic(path, pair_records(check, splits))


def data_check_line(check: DataCheck) -> str:
    """One line for the start of training: the duplicate counts and what they mean."""
    counts = check.counts()
    parts = [
        f"{between} {counts[between]['exact']} exact / {counts[between]['near']} near"
        for between in BETWEEN
    ]
    sizes = ", ".join(f"{name} {size}" for name, size in check.sizes.items())
    return (
        f"data check ({sizes} entries; TF-IDF cosine >= {check.threshold} is near): "
        f"{'; '.join(parts)} duplicates ({check.seconds:.1f} s)"
    )


def format_check(check: DataCheck) -> str:
    """The counts as a table: within train, and val / test entries with a copy in train."""
    counts = check.counts()
    meaning = {
        "train": "train entries duplicating an earlier train entry",
        "train-val": "validation entries with a copy in train",
        "train-test": "test entries with a copy in train",
    }
    lines = [f"{'':<11}{'exact':>7}{'near':>7}  (near: TF-IDF cosine >= {check.threshold})"]
    for between in BETWEEN:
        lines.append(
            f"{between:<11}{counts[between]['exact']:>7}{counts[between]['near']:>7}  "
            f"{meaning[between]}"
        )
    sizes = ", ".join(f"{name} {size}" for name, size in check.sizes.items())
    lines.append(f"splits: {sizes} entries; checked in {check.seconds:.1f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    # The Hydra edge composes the data config; this module takes plain values.
    from lit_sft.cli.check import main

    main()

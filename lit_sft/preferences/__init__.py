"""Preference pairs for DPO: from a run's own sampled answers, or the book's polite rewrites.

`python -m lit_sft.preferences run_dir=<sft run>` (conf/preferences.yaml) writes
`<run>/preferences.json`: `{instruction, input, output, chosen, rejected, split}` entries, the
train and validation pairs and the run's test split, so a DPO run on it is scored on the same
test entries as the SFT run.
"""

from lit_sft.preferences.build import sampled_pairs, score_answers
from lit_sft.preferences.pairs import PairRule, choose_pair, evaluation_entries, split_pairs
from lit_sft.preferences.rewrite import rewrite_pairs
from lit_sft.preferences.sampling import SamplingOptions, sample_answers

__all__ = [
    "PairRule",
    "SamplingOptions",
    "choose_pair",
    "evaluation_entries",
    "rewrite_pairs",
    "sample_answers",
    "sampled_pairs",
    "score_answers",
    "split_pairs",
]

"""The Hydra edge of lit_sft: what composes or reads configs and turns them into library calls.

Only this package (and the entry-point scripts) imports hydra or omegaconf; the rest of lit_sft
takes plain values.
"""

"""lit_sft against the book's chapter-7 code: `python -m benchmarks.<script> --help`.

`common` holds what the scripts share (options, the book's code, seeded weights, timing, memory,
the JSON line); `steps` the training steps of both sides. Results: `benchmarks/RESULTS.md`.
"""

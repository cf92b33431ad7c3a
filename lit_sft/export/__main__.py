"""`python -m lit_sft.export ...`."""

from lit_sft.export.command import main

main()

"""`python -m lit_sft.preferences run_dir=<sft run>`: the Hydra command, imported only when run."""

if __name__ == "__main__":
    from lit_sft.cli.errors import run_cli
    from lit_sft.cli.preferences import main

    run_cli(main)

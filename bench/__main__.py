"""``python -m bench``: the one command that runs the benchmark."""

from bench.cli import main

main(prog_name="python -m bench")

"""``python -m orchestrator.console ...`` is ``orchestrator console ...`` (dev mode starts it
so, with the interpreter it runs on)."""

import sys

from orchestrator.cli import main

if __name__ == "__main__":
    sys.argv = ["orchestrator", "console", *sys.argv[1:]]
    main()

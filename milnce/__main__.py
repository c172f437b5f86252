"""`python -m milnce <verb> [args ...]`: the same as the `milnce` console command (milnce/cli.py)."""
import sys

from milnce.cli import main

if __name__ == "__main__":
    sys.exit(main())

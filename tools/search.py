"""Search a moment index (tools/extract.py) by text, or serve a local search page; same as `milnce search`."""
import sys

from milnce.commands.search import main

if __name__ == "__main__":
    sys.exit(main())

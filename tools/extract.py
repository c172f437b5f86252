"""Slide a window over every video of a folder / list and write a searchable moment index; same as `milnce extract`."""
import sys

from milnce.commands.extract import main

if __name__ == "__main__":
    sys.exit(main())

"""Linear probe of a checkpoint's frozen video tower on UCF-101 / HMDB-51 splits; same as `milnce probe`."""
import sys

from milnce.commands.probe import main

if __name__ == "__main__":
    sys.exit(main())

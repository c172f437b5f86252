"""Convert the released MIL-NCE model (or a MIL-NCE training checkpoint) into a milnce checkpoint; same as `milnce convert_checkpoint`."""
import sys

from milnce.commands.convert_checkpoint import main

if __name__ == "__main__":
    sys.exit(main())

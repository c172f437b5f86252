"""Build a NarrationIndex from HowTo100M captions; same as `milnce prepare_captions`."""
import sys

from milnce.commands.prepare_captions import main

if __name__ == "__main__":
    sys.exit(main())

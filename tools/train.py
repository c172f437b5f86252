"""Train (and evaluate) from a config: tools/train.py CONFIG [key=value ...]; same as `milnce train`."""
import sys

from milnce.commands.train import main

if __name__ == "__main__":
    sys.exit(main())

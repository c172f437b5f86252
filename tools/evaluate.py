"""Evaluate any checkpoint with the configured protocols: tools/evaluate.py CONFIG checkpoint=PATH [key=value ...]; same as `milnce evaluate`."""
import sys

from milnce.commands.evaluate import main

if __name__ == "__main__":
    sys.exit(main())

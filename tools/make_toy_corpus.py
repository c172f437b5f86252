"""Render the synthetic narrated-video corpus: tools/make_toy_corpus.py ROOT [--seed N] [--small] [--set key=value ...]; same as `milnce make_toy_corpus`."""
import sys

from milnce.commands.make_toy_corpus import main

if __name__ == "__main__":
    sys.exit(main())

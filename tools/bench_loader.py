"""Clip-loading throughput on HowTo100M-like videos, side by side in one run, on the same videos and windows; same as `milnce bench_loader`."""
import sys

from milnce.commands.bench_loader import main

if __name__ == "__main__":
    sys.exit(main())

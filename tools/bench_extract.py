"""Extraction throughput, the per-window path against decoding each video once, side by side in one run; same as `milnce bench_extract`."""
import sys

from milnce.commands.bench_extract import main

if __name__ == "__main__":
    sys.exit(main())

"""Benchmark the NarrationIndex at HowTo100M-like scale: build, open, and memory per DataLoader worker; same as `milnce bench_narrations`."""
import sys

from milnce.commands.bench_narrations import main

if __name__ == "__main__":
    sys.exit(main())

"""Clips/s and bytes per clip: training items from per-video files vs from shards; same as `milnce bench_shards`."""
import sys

from milnce.commands.bench_shards import main

if __name__ == "__main__":
    sys.exit(main())

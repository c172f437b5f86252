"""Forward and forward+backward throughput of every tower on this CPU, demo size next to full size; same as `milnce bench_towers`."""
import sys

from milnce.commands.bench_towers import main

if __name__ == "__main__":
    sys.exit(main())

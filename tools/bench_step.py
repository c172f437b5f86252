"""Where a training step's time goes: ours (Lightning, loggers, callbacks) against a bare PyTorch loop; same as `milnce bench_step`."""
import sys

from milnce.commands.bench_step import main

if __name__ == "__main__":
    sys.exit(main())

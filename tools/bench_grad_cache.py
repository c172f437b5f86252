"""Peak memory of one training step, direct vs gradient cache, at growing batch with a fixed chunk; same as `milnce bench_grad_cache`."""
import sys

from milnce.commands.bench_grad_cache import main

if __name__ == "__main__":
    sys.exit(main())

"""Cost of each loss (forward + backward) at the original's global batch, next to one S3D training step; same as `milnce bench_losses`."""
import sys

from milnce.commands.bench_losses import main

if __name__ == "__main__":
    sys.exit(main())

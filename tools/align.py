"""Re-time a corpus' ASR narrations with a trained model (caption files + Parquet sidecar); same as `milnce align`."""
import sys

from milnce.commands.align import main

if __name__ == "__main__":
    sys.exit(main())

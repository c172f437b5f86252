"""Write a HowTo100M-layout corpus into litdata shards for streaming pretraining; same as `milnce shard`."""
import sys

from milnce.commands.shard import main

if __name__ == "__main__":
    sys.exit(main())

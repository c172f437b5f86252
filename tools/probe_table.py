"""Linear probe of the pretrained video tower vs a random-init tower vs chance on the toy action split; same as `milnce probe_table`."""
import sys

from milnce.commands.probe_table import main

if __name__ == "__main__":
    sys.exit(main())

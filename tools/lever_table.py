"""What each lever of the demo recipe gave: one change per row, the demo's wall-clock budget for every row; same as `milnce lever_table`."""
import sys

from milnce.commands.lever_table import main

if __name__ == "__main__":
    sys.exit(main())

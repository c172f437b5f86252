"""MIL-NCE vs NCE vs max-margin on the demo recipe, same budget, side by side (the MIL-NCE paper's ablation); same as `milnce compare_losses`."""
import sys

from milnce.commands.compare_losses import main

if __name__ == "__main__":
    sys.exit(main())

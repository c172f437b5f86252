"""Zero-shot / scratch / fine-tuned text→video R@1 side by side (the HowTo100M fine-tuning table), toy corpus default; same as `milnce finetune_table`."""
import sys

from milnce.commands.finetune_table import main

if __name__ == "__main__":
    sys.exit(main())

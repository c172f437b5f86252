"""Narration alignment on the toy corpus (offsets, R@1, ROC-AUC, train → re-time → train); same as `milnce alignment_table`."""
import sys

from milnce.commands.alignment_table import main

if __name__ == "__main__":
    sys.exit(main())

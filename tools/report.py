"""Write RUN_DIR/report.md (+ report/*.png): training loss, retrieval R@K over steps, CrossTask recall per task; same as `milnce report`."""
import sys

from milnce.commands.report import main

if __name__ == "__main__":
    sys.exit(main())

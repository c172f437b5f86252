"""Count a dataset's listed videos that are present and decodable, their total duration, and list the rest; same as `milnce audit_data`."""
import sys

from milnce.commands.audit_data import main

if __name__ == "__main__":
    sys.exit(main())

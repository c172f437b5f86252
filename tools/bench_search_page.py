"""Load the local search page (concurrent queries and range requests): latency and RSS; same as `milnce bench_search_page`."""
import sys

from milnce.commands.bench_search_page import main

if __name__ == "__main__":
    sys.exit(main())

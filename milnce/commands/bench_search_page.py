"""Load the local search page: concurrent clients mixing queries and range requests; p50/p99 latency and RSS.

    python tools/bench_search_page.py [--clients 16] [--requests 50] [--file-mb 8] [--index DIR]

Without --index: a temporary index of two small videos and one of --file-mb MB (random frames), queries encoded
by a random-weight tiny model (the page's cost is measured, not a model's). With --index: that index and its
checkpoint; range requests go to its largest video. The server runs in a thread of this process
(milnce.search.page_load says what the figures include). Each client sends --requests requests, one connection
each: JSON and HTML queries, thumbnails, single ranges, suffix ranges, whole files and HEADs; every body is checked.
The last printed line is a JSON object.
"""
import argparse
import json
import sys
import tempfile
import warnings

from milnce.search.page_load import PageLoad, build_page_index, largest_row, summary_lines, tiny_search_model
from milnce.search.server import THUMB_CACHE_SIZE, Searcher, make_server, serve_in_thread


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=50, help="requests per client")
    ap.add_argument("--file-mb", type=float, default=8.0, help="size of the large video (without --index)")
    ap.add_argument("--index", help="an existing moment index (default: a temporary one)")
    ap.add_argument("--checkpoint", help="with --index: the model for queries (default: the index's)")
    ap.add_argument("--thumb-cache", type=int, default=THUMB_CACHE_SIZE,
                    help="thumbnails kept (a small one, e.g. 4, makes the load re-render them)")
    ap.add_argument("--warm-up", type=int, help="requests per client in the unmeasured first burst (default: "
                    "--requests; a fresh process's first concurrent burst grows its malloc arenas once)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_search_page_") as tmp:
        if args.index:
            searcher = Searcher(args.index, checkpoint=args.checkpoint, thumb_cache=args.thumb_cache)
        else:
            model = tiny_search_model(args.seed)
            index_dir, _ = build_page_index(tmp, model, args.file_mb)
            searcher = Searcher(index_dir, model=model, thumb_cache=args.thumb_cache)
        row, large = largest_row(searcher)
        with warnings.catch_warnings():
            warnings.simplefilter("error")   # 127.0.0.1: no exposure warning expected
            server = make_server(searcher, port=0)
        serve_in_thread(server)
        try:
            host, port = server.server_address[:2]
            load = PageLoad(host, port, row, large, rows=len(searcher.index))
            result = load.run(args.clients, args.requests, seed=args.seed, warm_up=args.warm_up)
        finally:
            server.shutdown()
            server.server_close()
    result["thumb_cache"] = searcher.thumbnail_cache_info()._asdict()
    for line in summary_lines(result):
        print(line, file=sys.stderr)
    for failure in result["failures"]:
        print(f"  failed: {failure}", file=sys.stderr)
    print(json.dumps(result))
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())

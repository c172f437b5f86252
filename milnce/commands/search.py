"""Search a moment index (tools/extract.py) by text, or serve a local search page.

    python tools/search.py --index index/toy "the red circle spins" --top 5 --json
    python tools/search.py --index index/toy --serve [--host 127.0.0.1 --port 8765]

The page binds 127.0.0.1 (this machine only); another --host warns that the page has no authentication.
"""
import argparse
import json
import sys
from milnce.search.evaluation import evaluate_toy_search
from milnce.search.server import (MAX_CONNECTIONS, REQUEST_TIMEOUT_S, THUMB_CACHE_SIZE, Searcher, make_server,
                                  page_url, results_json)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("query", nargs="?", help="text query (omit with --serve)")
    ap.add_argument("--index", required=True, help="index directory written by tools/extract.py")
    ap.add_argument("--top", type=int, default=10, help="moments to return")
    ap.add_argument("--json", action="store_true", help="print a JSON list of {video, start, end, score}")
    ap.add_argument("--distinct", action="store_true",
                    help="skip moments overlapping a better one of the same video (the page always does)")
    ap.add_argument("--all-overlapping", action="store_true", help="--serve: show overlapping moments too")
    ap.add_argument("--checkpoint", help="model to encode queries (default: the one the index was built with)")
    ap.add_argument("--vocab", help="word list for the released checkpoint (s3d_dict.npy)")
    ap.add_argument("--serve", action="store_true", help="start the local search page")
    ap.add_argument("--eval-toy", metavar="TOY_ROOT", help="precision@top of every object×action query on an "
                    "index of toy-corpus videos (ground truth from TOY_ROOT/toy/manifest.json)")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--thumb-cache", type=int, default=THUMB_CACHE_SIZE,
                    help=f"--serve: thumbnails kept in memory; LRU (default {THUMB_CACHE_SIZE})")
    ap.add_argument("--request-timeout", type=float, default=REQUEST_TIMEOUT_S,
                    help=f"--serve: seconds a connection may wait on one read or write (default {REQUEST_TIMEOUT_S:g})")
    ap.add_argument("--max-connections", type=int, default=MAX_CONNECTIONS,
                    help=f"--serve: connections served at once, others get 503 (default {MAX_CONNECTIONS})")
    args = ap.parse_args(argv)
    if not args.serve and not args.query and not args.eval_toy:
        ap.error("give a QUERY, --serve or --eval-toy")


    searcher = Searcher(args.index, checkpoint=args.checkpoint, vocab=args.vocab, thumb_cache=args.thumb_cache)
    if args.eval_toy:
        result = evaluate_toy_search(searcher, args.eval_toy, k=args.top, distinct=args.distinct)
        for q in result["per_query"]:
            print(f"{q['hits']}/{args.top}  {q['query']}", file=sys.stderr)
        print(json.dumps({k: v for k, v in result.items() if k != "per_query"}))
        return
    if args.serve:
        server = make_server(searcher, args.host, args.port, k=args.top, distinct=not args.all_overlapping,
                             request_timeout=args.request_timeout, max_connections=args.max_connections)
        print(f"[search] {len(searcher.index)} moments; open {page_url(server)}  (Ctrl-C to stop)", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
        return
    results = results_json(searcher.search(args.query, args.top, distinct=args.distinct))
    if args.json:
        print(json.dumps(results))
        return
    for rank, r in enumerate(results, 1):
        print(f"{rank:3d}  {r['score']:9.4f}  {r['start']:8.2f}-{r['end']:<8.2f} {r['video']}")


if __name__ == "__main__":
    main()

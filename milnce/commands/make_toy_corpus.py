"""Render the synthetic narrated-video corpus: tools/make_toy_corpus.py ROOT [--seed N] [--small] [--set key=value ...]

Writes HowTo100M-, YouCook2-, MSR-VTT- and CrossTask-style files under ROOT (see datamodules/toy/corpus.py) and prints
the counts and the time it took. An existing complete corpus with the same config is kept unless --force.
"""
import argparse
import ast
import json
import sys
import time
from dataclasses import fields


from datamodules.toy.corpus import ToyCorpusConfig, make_toy_corpus, toy_corpus_exists


def parse_overrides(pairs):
    valid = {f.name for f in fields(ToyCorpusConfig)}
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"error: --set expects key=value, got '{pair}'")
        if key not in valid:
            raise SystemExit(f"error: unknown ToyCorpusConfig key '{key}' (valid: {', '.join(sorted(valid))})")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="output folder (written atomically)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--small", action="store_true", help="a few short videos per split")
    parser.add_argument("--workers", type=int, default=None, help="rendering processes (default: auto)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="ToyCorpusConfig overrides")
    parser.add_argument("--force", action="store_true", help="regenerate even if a matching corpus exists")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    overrides = parse_overrides(args.set)
    try:
        cfg = (ToyCorpusConfig.small if args.small else ToyCorpusConfig)(seed=args.seed, **overrides)
    except (TypeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not args.force and toy_corpus_exists(args.root, cfg):
        print(f"{args.root}: a complete corpus with this config exists (use --force to regenerate)")
        return 0
    t0 = time.perf_counter()
    manifest = make_toy_corpus(args.root, cfg, progress=not args.quiet, workers=args.workers)
    size = sum(manifest["files"].values())
    print(json.dumps({"root": str(args.root), "seconds": round(time.perf_counter() - t0, 1),
                      "workers": manifest["render_workers"], "megabytes": round(size / 2**20, 1),
                      **manifest["counts"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

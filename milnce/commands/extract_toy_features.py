"""Write toy "2D"/"3D" per-video features: tools/extract_toy_features.py [ROOT] [--out DIR] [--overwrite]

Fixed colour-grid (1 row/s) and motion-grid (1.5 rows/s) features of every toy video (training, YouCook2-style and
MSR-VTT-style), in the HowTo100M layout read by data.dataset=features (see datamodules/toy/features.py).
"""
import argparse
import json
import time
from pathlib import Path


from datamodules.toy.features import extract_toy_features


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", default="data/toy", help="toy corpus root (default data/toy)")
    ap.add_argument("--out", default=None, help="output directory (default ROOT/features)")
    ap.add_argument("--overwrite", action="store_true", help="rewrite files that exist")
    args = ap.parse_args(argv)
    if not (Path(args.root) / "howto100m" / "videos.csv").is_file():
        raise SystemExit(f"error: no toy corpus at {args.root} (run tools/make_toy_corpus.py first)")
    t0 = time.time()
    counts = extract_toy_features(Path(args.root), Path(args.out) if args.out else None, overwrite=args.overwrite)
    print(json.dumps({**counts, "seconds": round(time.time() - t0, 1)}))


if __name__ == "__main__":
    main()

"""Slide a window over every video of a folder / list and write a searchable moment index.

    python tools/extract.py --checkpoint runs/demo/checkpoints/last.ckpt --out index/toy data/toy/crosstask/videos \
        --window 2 --stride 1 [--features-dir features/toy] [--normalize] [--nlist 1024]

Rerunning with the same --out skips finished videos; unreadable videos are listed in OUT/failed.tsv.
"""
import argparse
import json
import sys
from pathlib import Path


from milnce.api import load_model
from milnce.search.extract import extract, list_videos
from milnce.train.threads import pin_torch_threads


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("videos", nargs="+", help="video files, folders (recursive) or .txt lists of paths")
    ap.add_argument("--checkpoint", required=True, help="our .ckpt, a converted file or the released .pth")
    ap.add_argument("--vocab", help="word list for the released checkpoint (s3d_dict.npy)")
    ap.add_argument("--out", required=True, help="index directory (created; resumed when it exists)")
    ap.add_argument("--window", type=float, help="seconds per moment (default: one clip, num_frames / fps)")
    ap.add_argument("--stride", type=float, help="seconds between window starts (default: window / 2)")
    ap.add_argument("--normalize", action="store_true", help="L2-normalise (cosine scores; default: dot product)")
    ap.add_argument("--features-dir", help="also write per-video T×D .npy features (+ .json rate sidecar) here")
    ap.add_argument("--shard-rows", type=int, default=50_000)
    ap.add_argument("--nlist", type=int, default=0, help="> 0: approximate IVF index with this many lists")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = ap.parse_args(argv)
    if args.threads:
        pin_torch_threads(args.threads)


    model = load_model(args.checkpoint, device=args.device, vocab=args.vocab)
    videos = list_videos(args.videos)
    summary = extract(model, videos, args.out, window=args.window, stride=args.stride, normalize=args.normalize,
                      shard_rows=args.shard_rows, features_dir=args.features_dir, nlist=args.nlist,
                      batch_size=args.batch_size)
    if summary["failed"]:
        print(f"[extract] {summary['failed']} unreadable videos listed in {Path(args.out) / 'failed.tsv'}",
              file=sys.stderr)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

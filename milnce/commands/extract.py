"""Slide a window over every video of a folder / list and write a searchable moment index.

    python tools/extract.py --checkpoint runs/demo/checkpoints/last.ckpt --out index/toy data/toy/crosstask/videos \
        --window 2 --stride 1 [--features-dir features/toy] [--normalize] [--index IVF4096,PQ64]
    python tools/extract.py --rebuild-index --out index/toy [--index …]   # only (re)build faiss.index + rows.parquet

Each video is decoded once in --workers DataLoader processes while the model runs (Lightning predict; --devices /
--num-nodes / --strategy scale it out). Rerunning with the same --out skips finished videos; unreadable videos are
listed in OUT/failed.tsv.
"""
import argparse
import json
import sys
from pathlib import Path

from milnce.api import load_model
from milnce.search.extract import MODES, extract, lightning_accelerator, list_videos
from milnce.search.faiss_build import DEFAULT_TRAIN_SAMPLE, build_faiss
from milnce.train.threads import pin_torch_threads


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("videos", nargs="*", help="video files, folders (recursive) or .txt lists of paths")
    ap.add_argument("--checkpoint", help="our .ckpt, a converted file or the released .pth")
    ap.add_argument("--vocab", help="word list for the released checkpoint (s3d_dict.npy)")
    ap.add_argument("--out", required=True, help="index directory (created; resumed when it exists)")
    ap.add_argument("--window", type=float, help="seconds per moment (default: one clip, num_frames / fps)")
    ap.add_argument("--stride", type=float, help="seconds between window starts (default: window / 2)")
    ap.add_argument("--normalize", action="store_true", help="L2-normalise (cosine scores; default: dot product)")
    ap.add_argument("--features-dir", help="also write per-video T×D .npy features (+ .json rate sidecar) here")
    ap.add_argument("--shard-rows", type=int, default=50_000)
    ap.add_argument("--nlist", type=int, default=0, help="> 0: shorthand for --index IVF<nlist>,Flat")
    ap.add_argument("--index", help="faiss index_factory string: Flat (default), IVF4096,Flat, IVF4096,PQ64, …")
    ap.add_argument("--train-sample", type=int, default=DEFAULT_TRAIN_SAMPLE,
                    help="vectors drawn (seeded) to train an index that needs training (IVF, PQ)")
    ap.add_argument("--rebuild-index", action="store_true", help="no extraction: rebuild faiss.index + rows.parquet")
    ap.add_argument("--batch-size", type=int, default=16, help="clips per model call (rounded up to whole windows)")
    ap.add_argument("--mode", choices=MODES, default="once",
                    help="once: decode each video once in workers (default); per_window: the old sequential path")
    ap.add_argument("--workers", type=int, default=1, help="DataLoader decoding processes per device")
    ap.add_argument("--chunk-seconds", type=float, default=60.0, help="seconds of video decoded at a time")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, … (Lightning accelerator of --mode once)")
    ap.add_argument("--devices", default="1", help="devices per node (Lightning Trainer devices)")
    ap.add_argument("--num-nodes", type=int, default=1)
    ap.add_argument("--strategy", default="auto", help="Lightning strategy (ddp, ddp_spawn, …)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = ap.parse_args(argv)
    if args.threads:
        pin_torch_threads(args.threads)
    if args.rebuild_index:
        print(json.dumps(build_faiss(args.out, nlist=args.nlist, spec=args.index,
                                     train_sample=args.train_sample, progress=True)))
        return 0
    if not args.checkpoint or not args.videos:
        ap.error("--checkpoint and at least one video source are needed (or --rebuild-index)")
    model = load_model(args.checkpoint, device="cpu" if args.mode == "once" else args.device, vocab=args.vocab)
    videos = list_videos(args.videos)
    devices = int(args.devices) if args.devices.isdigit() else args.devices
    summary = extract(model, videos, args.out, window=args.window, stride=args.stride, normalize=args.normalize,
                      shard_rows=args.shard_rows, features_dir=args.features_dir, nlist=args.nlist,
                      batch_size=args.batch_size, mode=args.mode, num_workers=args.workers,
                      chunk_seconds=args.chunk_seconds, accelerator=lightning_accelerator(args.device),
                      devices=devices, num_nodes=args.num_nodes, strategy=args.strategy, index_spec=args.index,
                      train_sample=args.train_sample)
    if summary["failed"]:
        print(f"[extract] {summary['failed']} unreadable videos listed in {Path(args.out) / 'failed.tsv'}",
              file=sys.stderr)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    main()

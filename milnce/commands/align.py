"""Re-time a corpus' ASR narrations with a trained model: re-timed caption files + a Parquet sidecar.

    milnce align --checkpoint runs/demo/checkpoints/last.ckpt --captions data/toy/howto100m/caption.json \
        --videos data/toy/videos --out runs/aligned [--radius 32 | --radius global] [--stride 0.4] [--workers 2]

Writes OUT/caption.json and OUT/captions/<id>.csv (the HowTo100M layouts, predicted times; train on them with
data.captions=OUT/caption.json [data.min_alignability=X]) and OUT/alignment.parquet (per narration: video, index,
text, ASR and predicted start/end, score, alignability, margin). Rerunning with the same OUT resumes; unreadable
videos are listed in OUT/failed.txt and keep their ASR times. Several devices: torchrun --nproc_per_node=N, one
device per process (cuda:LOCAL_RANK).
"""
import argparse
import json
import os
import sys

import torch

from milnce.align.retime import align_corpus
from milnce.align.scoring import SearchSettings
from milnce.api import load_model
from milnce.train.threads import pin_torch_threads


def radius_arg(text: str):
    if text.lower() in ("global", "none", "inf"):
        return None
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"--radius must be > 0 seconds or 'global', got {text}")
    return value


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="our .ckpt, a converted file or the released .pth")
    ap.add_argument("--vocab", help="word list for the released checkpoint (s3d_dict.npy)")
    ap.add_argument("--captions", required=True, help="caption.json or a folder of <video_id>.csv (ASR times)")
    ap.add_argument("--videos", required=True, help="video root (<id>.mp4 …, or paths of --video-list under it)")
    ap.add_argument("--video-list", help="MIL-NCE video list CSV (column video_path, relative to --videos)")
    ap.add_argument("--out", required=True, help="output folder (created; resumed when it exists)")
    ap.add_argument("--radius", type=radius_arg, default=32.0,
                    help="search ± this many seconds around each ASR time (default 32: HTM-Align's 64 s window); "
                         "'global': the whole video")
    ap.add_argument("--stride", type=float, default=0.4, help="seconds between window starts (whole frames)")
    ap.add_argument("--smooth", type=float, default=0.0,
                    help="seconds of moving average over each narration's scores before the argmax (0: none)")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers decoding videos")
    ap.add_argument("--device", default=None, help="default: cuda:LOCAL_RANK under torchrun with CUDA, else cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = ap.parse_args(argv)
    if args.threads:
        pin_torch_threads(args.threads)
    device = args.device
    if device is None:
        device = f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if torch.cuda.is_available() else "cpu"
    model = load_model(args.checkpoint, device=device, vocab=args.vocab)
    settings = SearchSettings(radius=args.radius, stride=args.stride, smooth=args.smooth)
    summary = align_corpus(model, args.captions, args.videos, args.out, settings, video_list=args.video_list,
                           num_workers=args.workers)
    if summary["failed"]:
        print(f"[align] {summary['failed']} videos could not be aligned: see {args.out}/failed.txt "
              f"(written once every share is done)", file=sys.stderr)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

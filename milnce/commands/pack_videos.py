"""Re-encode a video corpus once for fast random clip access (datamodules/video/pack.py).

Keeps the relative paths under --root and writes .mp4 (H.264, yuv420p, constant frame rate, a keyframe every
--keyframe-interval seconds, short side --short-side, rotation applied, no audio). Point the training config's
data.video_root at --out afterwards; tools/bench_loader.py shows what it buys. Example:

  python tools/pack_videos.py --root /data/howto100m/videos --list howto100m_videos.csv \
      --out /data/howto100m/packed --jobs 16
"""
import argparse
import csv
import json
import sys
from pathlib import Path


from datamodules.video.pack import pack_corpus

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v")


def list_videos(root: Path, listing: str = None):
    if listing is None:
        return sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
    path = Path(listing)
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "video_path" not in reader.fieldnames:
                raise SystemExit(f"{path}: expected a CSV with a 'video_path' column, got {reader.fieldnames}")
            return [str(root / row["video_path"]) for row in reader]
    lines = path.read_text(encoding="utf-8").splitlines()
    return [str(root / line.strip()) for line in lines if line.strip()]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True, help="folder of the source videos")
    ap.add_argument("--out", required=True, help="folder for the packed copies (same relative paths, .mp4)")
    ap.add_argument("--list", help="CSV with a video_path column, or a text file of paths, relative to --root "
                                   "(default: every video file under --root)")
    ap.add_argument("--short-side", type=int, default=256, help="0 keeps the source size")
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--keyframe-interval", type=float, default=1.0, help="seconds")
    ap.add_argument("--crf", type=int, default=23)
    ap.add_argument("--preset", default="medium")
    ap.add_argument("--jobs", type=int, default=1, help="parallel processes (one encoder thread each)")
    ap.add_argument("--overwrite", action="store_true", help="re-pack outputs that already exist")
    args = ap.parse_args(argv)

    root = Path(args.root)
    paths = list_videos(root, args.list)
    result = pack_corpus(paths, str(root), args.out, skip_existing=not args.overwrite, jobs=args.jobs,
                         short_side=args.short_side or None, fps=args.fps, keyframe_interval=args.keyframe_interval,
                         crf=args.crf, preset=args.preset, threads=1)
    for src, reason in sorted(result["failed"].items()):
        print(f"FAILED {src}: {reason}", file=sys.stderr)
    print(json.dumps({"packed": len(result["packed"]), "failed": len(result["failed"]), "out": args.out}))
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())

"""Write a HowTo100M-layout corpus into litdata shards for streaming pretraining (data.dataset=shards).

Reads what training reads (data.root, or --video-root / --video-list / --captions, the same defaults), writes one
sample per video (its bytes, narrations, id, duration, sha256) and manifest.json with per-shard checksums, sample
counts and seconds. Train with `data.dataset=shards data.shards=DIR` (or an s3:// URL after uploading DIR; set
AWS_ENDPOINT_URL for S3-compatible stores). --verify DIR checks a written set against its manifest.
--segment-seconds S stores each video as keyframe-aligned stream-copy segments of at least S seconds instead, so
a clip reads one segment, not its whole video; consecutive segments overlap by at least --overlap-seconds (default
10: more than the longest training clip of conf/, 16 frames at 5 fps = 3.2 s; training refuses clips longer
than the overlap). Example:

  milnce shard --root /data/howto100m --video-root /data/howto100m/packed --out /data/howto100m/shards
  aws s3 cp --recursive /data/howto100m/shards s3://bucket/howto100m/shards
"""
import argparse
import json
import sys

from omegaconf import OmegaConf

from milnce.config import DataConfig
from datamodules.howto100m import HowTo100MDataModule
from datamodules.shards.manifest import ShardError, read_manifest, verify_shards
from datamodules.shards.reader import ShardReader
from datamodules.shards.segments import verify_segments
from datamodules.shards.writer import write_shards


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", help="corpus root (data.root): <root>/videos, <root>/howto100m/{videos.csv,caption.json}")
    ap.add_argument("--video-root", help="default <root>/videos (point it at packed videos to shard those)")
    ap.add_argument("--video-list", help="CSV with video_id,video_path; default <root>/howto100m/videos.csv")
    ap.add_argument("--captions", help="caption.json or a folder of <video_id>.csv; default <root>/howto100m/caption.json")
    ap.add_argument("--out", help="folder for the shard set (default <root>/shards)")
    ap.add_argument("--chunk-bytes", default="256MB", help="target shard size (litdata chunk_bytes)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing shard set at --out")
    ap.add_argument("--segment-seconds", type=float, default=0.0,
                    help="cut each video into segments of at least this many seconds (0: one sample per video)")
    ap.add_argument("--overlap-seconds", type=float, default=10.0,
                    help="least overlap of consecutive segments = the longest clip that trains from them")
    ap.add_argument("--verify", metavar="DIR", help="only check the shard set in DIR against its manifest")
    args = ap.parse_args(argv)

    try:
        if args.verify:
            problems = verify_shards(args.verify)
            if not problems and "segment_seconds" in read_manifest(args.verify):
                problems = verify_segments(ShardReader(args.verify), read_manifest(args.verify))
            for line in problems:
                print(f"BAD {line}", file=sys.stderr)
            print(json.dumps({"verified": args.verify, "problems": len(problems)}))
            return 1 if problems else 0
        if not args.root:
            ap.error("--root is required (or --verify DIR)")
        cfg = OmegaConf.structured(DataConfig(root=args.root, video_root=args.video_root,
                                              video_list=args.video_list, captions=args.captions))
        corpus = HowTo100MDataModule(cfg)
        corpus.setup()
        out = args.out or f"{args.root.rstrip('/')}/shards"
        manifest = write_shards(corpus.index, corpus.paths, out, chunk_bytes=args.chunk_bytes,
                                overwrite=args.overwrite, segment_seconds=args.segment_seconds,
                                overlap_seconds=args.overlap_seconds)
    except (ShardError, FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path, reason in sorted(manifest["failed"].items()):
        print(f"FAILED {path}: {reason}", file=sys.stderr)
    print(json.dumps({"out": out, "samples": manifest["samples"], "shards": len(manifest["shards"]),
                      "segments": sum(len(v.get("segments", ())) for v in manifest["videos"]),
                      "bytes": sum(s["bytes"] for s in manifest["shards"]), "failed": len(manifest["failed"])}))
    return 0

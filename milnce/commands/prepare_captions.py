"""Build a NarrationIndex from HowTo100M captions.

    python tools/prepare_captions.py CAPTIONS OUT_DIR [--video-list videos.csv] [--meta HowTo100M_v1.csv]
                                     [--durations durations.csv] [--clean-asr] [--strict] [--skip-bad-videos]

CAPTIONS is caption.json / raw_caption.json or a folder of per-video start,end,text CSVs. Bad rows are dropped
and counted (--strict makes them errors); the last printed line is a JSON summary of the counts.
"""
import argparse
import json
import sys
import time
import warnings
from pathlib import Path


from datamodules.narrations.bags import build_index_from_captions
from datamodules.narrations.readers import CaptionError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("captions", type=Path, help="caption.json, raw_caption.json or a folder of <id>.csv")
    parser.add_argument("out_dir", type=Path, help="index directory to write")
    parser.add_argument("--video-list", type=Path, help="MIL-NCE video list CSV (column video_path): only these")
    parser.add_argument("--meta", type=Path, help="HowTo100M_v1.csv (video_id,category_1,category_2,rank,task_id)")
    parser.add_argument("--durations", type=Path, help="video_id,duration CSV; drops narrations past the end")
    parser.add_argument("--clean-asr", action="store_true", help="drop empty lines and rolling ASR repeats")
    parser.add_argument("--strict", action="store_true", help="a bad row is an error instead of being dropped")
    parser.add_argument("--skip-bad-videos", action="store_true",
                        help="skip (and list in OUT_DIR/bad_videos.txt) videos whose caption file is unusable")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT_DIR")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--show-warnings", action="store_true", help="print a warning per file with dropped rows")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    try:
        with warnings.catch_warnings():
            if not args.show_warnings:
                warnings.simplefilter("ignore", UserWarning)
            index = build_index_from_captions(args.captions, args.out_dir, video_list=args.video_list,
                                              meta=args.meta, durations=args.durations, strict=args.strict,
                                              clean_asr=args.clean_asr, skip_bad_videos=args.skip_bad_videos,
                                              progress=not args.no_progress, overwrite=args.overwrite)
    except (CaptionError, FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    manifest = index.manifest
    stats = manifest["build_stats"]
    print(f"{args.out_dir}: {manifest['num_videos']} videos, {manifest['num_narrations']} narrations, "
          f"{stats['dropped_rows_total']} rows dropped {stats['dropped_rows'] or ''}, "
          f"{stats['videos_emptied']} videos left without narrations, {stats['bad_videos']} bad videos skipped")
    for example in stats["examples"][:5]:
        print(f"  dropped: {example}")
    summary = dict({k: v for k, v in stats.items() if k != "examples"}, videos=manifest["num_videos"], narrations=manifest["num_narrations"],
                   meta_columns=manifest["meta_columns"], seconds=round(time.perf_counter() - started, 2))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

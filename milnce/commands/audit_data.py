"""Count a dataset's listed videos that are present and decodable, their total duration, and list the rest.

    python tools/audit_data.py howto100m data/toy/howto100m/videos.csv --video-root data/toy/videos --out audit/
    python tools/audit_data.py youcook2 data/toy/youcook2/validation_youcook.csv --video-root data/toy/youcook2
    python tools/audit_data.py msrvtt data/toy/msrvtt/msrvtt_test.csv --video-root data/toy/msrvtt/videos
    python tools/audit_data.py crosstask data/toy/crosstask [--video-root data/toy/crosstask/videos]

Writes OUT/<dataset>_audit.json, <dataset>_missing.csv and <dataset>_broken.csv; prints the summary as JSON.
"""
import argparse
import json
import sys
from milnce.train.audit import audit, dataset_list, write_audit


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", choices=["howto100m", "youcook2", "msrvtt", "crosstask"])
    ap.add_argument("annotations", help="video CSV / annotation CSV or JSON / CrossTask release folder")
    ap.add_argument("--video-root", help="where the videos are (defaults as the evaluators resolve them)")
    ap.add_argument("--out", default="audit", help="folder for the summary and the missing / broken lists")
    ap.add_argument("--workers", type=int, default=2, help="decode checks in parallel")
    args = ap.parse_args(argv)

    videos = dataset_list(args.dataset, args.annotations, args.video_root)
    report = audit(videos, args.dataset, args.annotations, workers=args.workers)
    summary = write_audit(report, args.out)
    print(f"[audit] {args.dataset}: {summary['decodable']}/{summary['listed']} listed videos decodable "
          f"({summary['missing']} missing, {summary['broken']} broken), {summary['hours']:.2f} h", file=sys.stderr)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

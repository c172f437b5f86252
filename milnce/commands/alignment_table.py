"""Narration alignment on the toy corpus: offsets, HTM-Align R@1 and alignability ROC-AUC before/after re-timing.

  tools/alignment_table.py --checkpoint runs/demo/checkpoints/last.ckpt                # re-timing with the demo model
  tools/alignment_table.py --checkpoint runs/demo/checkpoints/last.ckpt --rounds --steps 650   # + train, re-time, train

The corpus (demo content, step lines shifted N(0, 5²) s, a 40-video HTM-Align-style held-out split) is rendered at
--root when absent. The last line printed is JSON:
{"offset_before_s", "offset_after_s", "r1_asr", "r1_aligned", "auc"}.
"""
import argparse
import sys

from milnce.config import ConfigError
from milnce.train.alignment_table import alignment_table, format_table, summary_line
from milnce.train.threads import pin_torch_threads


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="runs/demo/checkpoints/last.ckpt", help="the model that re-times")
    p.add_argument("--root", default="data/toy_align", help="the alignment toy corpus (rendered when absent)")
    p.add_argument("--work-dir", default="runs/alignment_table")
    p.add_argument("--radius", type=float, default=10.0, help="± seconds searched around each ASR time")
    p.add_argument("--stride", type=float, default=0.4, help="seconds between windows")
    p.add_argument("--select-videos", type=int, default=60, help="training videos that choose the smoothing")
    p.add_argument("--rounds", action="store_true", help="also train → re-time → train again (three trainings)")
    p.add_argument("--steps", type=int, default=650, help="training steps of every round (same budget)")
    p.add_argument("--drop-fraction", type=float, default=0.3,
                   help="the filtered round drops this fraction of the least alignable narrations")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    pin_torch_threads(args.threads)
    try:
        result = alignment_table(args.checkpoint, args.root, args.work_dir, args.radius, args.stride,
                                 args.select_videos, args.rounds, args.steps, args.drop_fraction)
    except (ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(result))
    print(summary_line(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

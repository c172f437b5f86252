"""Linear probe of the pretrained video tower vs a random-init tower vs chance on the toy action split.

  tools/probe_table.py                                   # renders a small toy corpus, pretrains briefly, probes
  tools/probe_table.py --checkpoint runs/probe_table/pretrain/checkpoints/last.ckpt
  tools/probe_table.py --steps 600 --set probe.l2=0.01   # overrides of conf/probe_toy.yaml (corpus, probe, training)

The last line printed is JSON: {"probe_top1": %, "random_top1": %, "chance_top1": %} (mean over the 3 splits).
"""
import argparse
import sys

from datamodules.benchmarks.action_split import SplitFileError
from milnce.config import ConfigError
from milnce.eval.probe import ProbeError
from milnce.train.probe_table import format_table, probe_table, summary_line


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="a checkpoint of ours trained at the probe's clip size (default: pretrain "
                                        "conf/probe_toy.yaml briefly into WORK_DIR/pretrain, or reuse it)")
    p.add_argument("--steps", type=int, default=300, help="pretraining steps (default 300)")
    p.add_argument("--work-dir", default="runs/probe_table", help="corpus, pretraining run and feature cache")
    p.add_argument("--seed", type=int, default=0, help="seed of the random-init tower")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="overrides of conf/probe_toy.yaml (e.g. probe.num_clips=8 toy.num_train_videos=600)")
    args = p.parse_args(argv)
    try:
        rows = probe_table(args.checkpoint, args.work_dir, args.steps, args.seed, args.set)
    except (ConfigError, ProbeError, SplitFileError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(rows))
    print(summary_line(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""MIL-NCE vs NCE vs max-margin on the demo recipe, same budget, side by side (the MIL-NCE paper's ablation).

  tools/compare_losses.py                                   # conf/demo.yaml as it is, three runs
  tools/compare_losses.py --set trainer.max_steps=300       # a shorter budget for every row

The last line printed is JSON: {"mil_nce": R10, "nce": R10, "max_margin": R10}.
"""
import argparse
import sys


from milnce.config import ConfigError
from milnce.train.loss_comparison import CONF, ROWS, compare_losses, format_table, summary_line


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(CONF / "demo.yaml"))
    p.add_argument("--work-dir", default="runs/compare_losses", help="the row runs are overwritten here")
    p.add_argument("--rows", nargs="*", default=list(ROWS), choices=ROWS)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every row")
    args = p.parse_args(argv)
    try:
        results = compare_losses(args.config, args.work_dir, args.set, args.rows)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(results))
    print(summary_line(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What each lever of the demo recipe gave: one change per row, the demo's wall-clock budget for every row.

  tools/lever_table.py                         # all rows (about an hour on 2 cores)
  tools/lever_table.py --rows demo 64_px       # some rows
  tools/lever_table.py --no-train              # phase 1 only: ms per step of every row

Prints a markdown table; the last line is JSON {row: {"ms_per_step": …, "R10": …}}.
"""
import argparse
import json
import sys


from milnce.config import ConfigError
from milnce.train.lever_table import CONF, LEVERS, format_table, lever_table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(CONF / "demo.yaml"))
    p.add_argument("--work-dir", default="runs/lever_table")
    p.add_argument("--rows", nargs="*", default=[], choices=[lv.name for lv in LEVERS])
    p.add_argument("--bench-steps", type=int, default=20)
    p.add_argument("--no-train", action="store_true", help="measure ms per step only")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every row")
    args = p.parse_args(argv)
    try:
        rows = lever_table(args.config, args.work_dir, args.rows, args.set, args.bench_steps, not args.no_train)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(rows))
    print(json.dumps({r["name"]: {"ms_per_step": r["ms_per_step"],
                                  "R10": (r.get("metrics") or {}).get("youcook2/R10")} for r in rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Write RUN_DIR/report.md (+ report/*.png): training loss, retrieval R@K over steps, CrossTask recall per task,
final metrics and protocol cards.

    python tools/report.py runs/demo
"""
import argparse
from milnce.eval.report import write_report


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", nargs="+", help="run directories (with logs/metrics.csv, metrics.json, …)")
    args = ap.parse_args(argv)

    for run_dir in args.run_dir:
        print(write_report(run_dir))


if __name__ == "__main__":
    main()

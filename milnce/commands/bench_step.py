"""Where a training step's time goes: ours (Lightning, loggers, callbacks) against a bare PyTorch loop.

    tools/bench_step.py CONFIG [key=value ...] [--steps 30 --warmup 5 --rounds 2]

Builds the run's data and model as tools/train.py does, times alternating rounds of both loops on the same
batches, prints the per-part table, and ends with one JSON line: ms_per_step, bare_ms_per_step, overhead_fraction
(ours ÷ bare − 1), parts_ms, ...
"""
import argparse
import json
import sys


from milnce.config import ConfigError, load_config
from milnce.train.step_benchmark import benchmark_step, parts_table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps at the start of every round")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of ours and bare")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result = benchmark_step(cfg, steps=args.steps, warmup=args.warmup, rounds=args.rounds)
    print(parts_table(result))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Evaluate any checkpoint with the configured protocols: tools/evaluate.py CONFIG checkpoint=PATH [key=value ...]

Examples:
  tools/evaluate.py conf/demo.yaml checkpoint=runs/demo/checkpoints/last.ckpt run_dir=runs/demo_eval
  tools/evaluate.py conf/eval_released.yaml checkpoint=s3d_howto100m.pth model.word2vec.vocab_path=s3d_dict.npy

Writes RUN_DIR/metrics.json (flat: youcook2/R10, crosstask/recall, chance/…), results.md and protocol_cards.json.
"""
import sys
from pathlib import Path


from milnce.config import ConfigError, load_config
from milnce.eval.setup import evaluate_checkpoint
from milnce.train.run import write_results


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    try:
        cfg = load_config(argv[0], argv[1:])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    metrics, cards = evaluate_checkpoint(cfg)
    write_results(Path(cfg.run_dir), metrics, cards)
    return 0


if __name__ == "__main__":
    sys.exit(main())

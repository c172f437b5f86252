"""Evaluate any checkpoint with the configured protocols: tools/evaluate.py CONFIG checkpoint=PATH [key=value ...]

Examples:
  tools/evaluate.py conf/demo.yaml checkpoint=runs/demo/checkpoints/last.ckpt run_dir=runs/demo_eval
  tools/evaluate.py conf/eval_released.yaml checkpoint=s3d_howto100m.pth model.word2vec.vocab_path=s3d_dict.npy

Writes RUN_DIR/metrics.json (flat: youcook2/R10, crosstask/recall, chance/…), results.md and protocol_cards.json.
"""
import sys
from pathlib import Path


from milnce.config import config_from_argv
from milnce.eval.setup import evaluate_checkpoint
from milnce.train.run import write_results


def main(argv=None) -> int:
    cfg, code = config_from_argv(sys.argv[1:] if argv is None else argv, __doc__)
    if cfg is None:
        return code

    metrics, cards = evaluate_checkpoint(cfg)
    write_results(Path(cfg.run_dir), metrics, cards)
    return 0


if __name__ == "__main__":
    sys.exit(main())

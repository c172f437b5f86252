"""Evaluate any checkpoint with the configured protocols: tools/evaluate.py CONFIG checkpoint=PATH [key=value ...]
[--protocols all]

Examples:
  tools/evaluate.py conf/demo.yaml checkpoint=runs/demo/checkpoints/last.ckpt run_dir=runs/demo_eval
  tools/evaluate.py conf/eval_released.yaml checkpoint=s3d_howto100m.pth model.word2vec.vocab_path=s3d_dict.npy
  tools/evaluate.py conf/eval_released.yaml checkpoint=s3d_howto100m.pth --protocols all

Writes RUN_DIR/metrics.json (flat: youcook2/R10, crosstask/recall, chance/…), results.md and protocol_cards.json.
--protocols all: each retrieval benchmark is encoded once and every protocol variant (MSR-VTT 1k-A / full split,
one / all captions, mean / max window pooling, raw dot / cosine, plain / dual-softmax) is scored from the cached
embeddings; the table goes to RUN_DIR/protocols.{md,csv,json} and is printed; metrics.json keeps the config's own
variant (text→video).
"""
import sys
from pathlib import Path
from typing import List, Optional, Tuple

from milnce.config import config_from_argv
from milnce.eval.callbacks import flatten_metrics
from milnce.eval.protocol_table import default_metrics, protocol_table, write_protocol_tables
from milnce.eval.setup import evaluate_checkpoint, load_checkpoint_model
from milnce.train.run import write_results

PROTOCOLS = ("default", "all")


def split_protocols_flag(argv: List[str]) -> Tuple[List[str], Optional[str]]:
    """argv without `--protocols X` / `--protocols=X`, and X (None when absent)."""
    rest, value = [], None
    it = iter(argv)
    for arg in it:
        if arg == "--protocols":
            value = next(it, "")
        elif arg.startswith("--protocols="):
            value = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return rest, value


def main(argv=None) -> int:
    argv, protocols = split_protocols_flag(list(sys.argv[1:] if argv is None else argv))
    if protocols is not None and protocols not in PROTOCOLS:
        print(f"error: --protocols must be one of {', '.join(PROTOCOLS)}, got '{protocols}'", file=sys.stderr)
        return 2
    cfg, code = config_from_argv(argv, __doc__)
    if cfg is None:
        return code
    if protocols != "all":
        metrics, cards = evaluate_checkpoint(cfg)
        write_results(Path(cfg.run_dir), metrics, cards)
        return 0
    module = load_checkpoint_model(cfg)
    tables = [protocol_table(cfg, r, module) for r in cfg.eval.retrieval]
    metrics, cards = evaluate_checkpoint(cfg, module=module, retrieval=False)
    for table in tables:
        metrics.update(flatten_metrics(table.dataset, default_metrics(table)))
        cards[table.dataset] = {**table.card(), "checkpoint": str(cfg.checkpoint)}
    write_protocol_tables(Path(cfg.run_dir), tables)
    write_results(Path(cfg.run_dir), metrics, cards)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Convert the released MIL-NCE model (or a MIL-NCE training checkpoint) into a milnce checkpoint.

  tools/convert_checkpoint.py s3d_howto100m.pth --dict s3d_dict.npy -o s3d_howto100m.milnce.pth
  tools/convert_checkpoint.py epoch0100.pth.tar --dict data/dict.npy -o milnce_epoch100.pth

The output holds the weights under video_tower.* / text_tower.* plus the vocabulary and the model settings
(space_to_depth, table size, max_words), so `model.init_from=` or evaluation can use it without other files.
"""
import argparse
import json
import sys


from milnce.checkpoint import CheckpointError, convert_original
from milnce.towers.word2vec import load_vocab


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="s3d_howto100m.pth or a MIL-NCE epochNNNN.pth.tar")
    parser.add_argument("-o", "--output", required=True, help="where to write the milnce checkpoint")
    parser.add_argument("--dict", dest="vocab", help="the word list: s3d_dict.npy / dict.npy or a .txt")
    parser.add_argument("--max-words", type=int, default=16,
                        help="words per sentence (released model 16; MIL-NCE training 20, its eval 30)")
    args = parser.parse_args(argv)
    try:
        vocab = load_vocab(args.vocab) if args.vocab else None
        found = convert_original(args.source, args.output, vocab=vocab, max_words=args.max_words)
    except (CheckpointError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"read {args.source}: {found['format']} checkpoint"
          + (f" (epoch {found['epoch']})" if found["epoch"] is not None else ""))
    print(f"  tensors: {found['tensors']}  BatchNorm counters: {'yes' if found['has_bn_counters'] else 'no'}")
    print(f"  video tower: S3D space_to_depth={found['model']['s3d']['space_to_depth']}, "
          f"{found['video_parameters']:,} parameters")
    if found["text_parameters"]:
        print(f"  text tower: word2vec, {found['model']['word2vec']['num_embeddings']:,} rows, "
              f"{found['text_parameters']:,} parameters")
    else:
        print("  text tower: none in this file")
    if found["vocab_size"] is None:
        print("  warning: no --dict given; the word tower needs the original vocabulary to embed text")
    else:
        print(f"  vocabulary: {found['vocab_size']:,} words")
    print(f"wrote {args.output}")
    print(json.dumps({"model": found["model"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

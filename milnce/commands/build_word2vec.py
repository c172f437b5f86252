"""Build a word vocabulary and its frozen word2vec matrix from a corpus's captions.

  tools/build_word2vec.py --captions data/howto100m/caption.json \\
      --word2vec GoogleNews-vectors-negative300.bin --out data/word2vec

Vocabulary = the words of the captions (tokenized as the MIL-NCE word tower: lower-case, [\\w']+) that have a
vector, sorted. Writes OUT/dict.npy (array of words; word i has token id i+1) and OUT/word2vec.pth (float
tensor (len+1)×dim, row 0 = zeros for padding), the pair model.word2vec.vocab_path / embedding_path expect.
--captions takes caption.json, a folder of per-video start,end,text CSVs, or any CSV with a text column.
"""
import argparse
import sys
from pathlib import Path


import torch

from milnce.towers.word2vec import save_vocab, word2vec_vocabulary
from datamodules.narrations.readers import read_caption_folder, read_caption_json


def caption_texts(source: Path, text_column: str):
    """Every caption text of caption.json, a folder of per-video CSVs, or one CSV with a text column."""

    if source.is_dir():
        for _, _, _, texts in read_caption_folder(source):
            yield from texts
    elif source.suffix == ".json":
        for _, _, _, texts in read_caption_json(source):
            yield from texts
    elif source.suffix == ".csv":
        import pandas as pd

        frame = pd.read_csv(source, dtype=str, keep_default_na=False)
        if text_column not in frame.columns:
            raise ValueError(f"{source}: no column '{text_column}' (columns: {', '.join(frame.columns)}); "
                             f"choose one with --text-column")
        yield from frame[text_column]
    else:
        raise ValueError(f"{source}: expected caption.json, a folder of caption CSVs or a .csv file")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--captions", required=True, type=Path, nargs="+",
                        help="caption.json, a folder of <video_id>.csv, or a CSV with a text column")
    parser.add_argument("--word2vec", required=True, type=Path, help="GoogleNews-format word2vec file")
    parser.add_argument("--format", choices=("auto", "binary", "text"), default="auto",
                        help="word2vec file format (auto: binary for .bin / .bin.gz)")
    parser.add_argument("--out", required=True, type=Path, help="output folder for dict.npy and word2vec.pth")
    parser.add_argument("--text-column", default="text", help="text column of a single CSV (e.g. sentence)")
    parser.add_argument("--min-count", type=int, default=1, help="keep words seen at least this often")
    parser.add_argument("--no-lowercase", action="store_true", help="keep case (the released model lowercases)")
    args = parser.parse_args(argv)

    from gensim.models import KeyedVectors
    from tqdm import tqdm

    binary = args.format == "binary" or (args.format == "auto" and ".bin" in args.word2vec.suffixes)
    try:
        if not args.word2vec.is_file():
            raise ValueError(f"{args.word2vec}: word2vec file not found")
        print(f"loading {args.word2vec} ({'binary' if binary else 'text'}) …", flush=True)
        try:
            vectors = KeyedVectors.load_word2vec_format(str(args.word2vec), binary=binary)
        except Exception as err:
            raise ValueError(f"{args.word2vec}: cannot read as a {'binary' if binary else 'text'} word2vec "
                             f"file ({type(err).__name__}: {err})") from err
        texts = (t for source in args.captions for t in caption_texts(source, args.text_column))
        vocab, matrix, without = word2vec_vocabulary(tqdm(texts, desc="captions", unit=" lines"), vectors,
                                                     min_count=args.min_count, lowercase=not args.no_lowercase)
    except ValueError as err:  # CaptionError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    save_vocab(args.out / "dict.npy", vocab)
    torch.save(matrix, args.out / "word2vec.pth")
    print(f"{len(vocab):,} words with a vector ({without:,} corpus words without one); "
          f"matrix {tuple(matrix.shape)}")
    print(f"wrote {args.out / 'dict.npy'} and {args.out / 'word2vec.pth'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Build a word vocabulary and its frozen word2vec matrix from a corpus's captions; same as `milnce build_word2vec`."""
import sys

from milnce.commands.build_word2vec import main

if __name__ == "__main__":
    sys.exit(main())

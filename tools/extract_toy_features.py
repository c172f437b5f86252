"""Write toy "2D"/"3D" per-video features: tools/extract_toy_features.py [ROOT] [--out DIR] [--overwrite]; same as `milnce extract_toy_features`."""
import sys

from milnce.commands.extract_toy_features import main

if __name__ == "__main__":
    sys.exit(main())

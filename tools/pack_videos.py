"""Re-encode a video corpus once for fast random clip access (datamodules/video/pack.py); same as `milnce pack_videos`."""
import sys

from milnce.commands.pack_videos import main

if __name__ == "__main__":
    sys.exit(main())

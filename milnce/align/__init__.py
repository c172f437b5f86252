"""Narration alignment: re-time a corpus' ASR narrations with a trained model (windows.py: a video's sliding-window
embeddings, decoded once; scoring.py: pick each narration's best window near its ASR time; retime.py: the
resumable corpus loop and the re-timed caption files + Parquet sidecar)."""

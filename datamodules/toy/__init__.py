"""The synthetic narrated-video corpus: story (what happens, what is said), render (pixels), formats (files), features."""

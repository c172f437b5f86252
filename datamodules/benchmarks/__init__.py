"""Public benchmark annotation readers: YouCook2, MSR-VTT, CrossTask; retrieval items and their evaluation windows."""

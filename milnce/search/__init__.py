"""Search over your own videos: extraction into a moment index, the search page, search precision."""

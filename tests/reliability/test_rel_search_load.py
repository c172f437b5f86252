"""The search page holds a load: 16 clients × 50 requests (queries, pages, thumbnails, single and suffix ranges,
whole files, HEADs of an 8 MB video), every answer checked byte for byte, resident memory flat."""
import pytest

from milnce.search.page_load import PageLoad, build_page_index, largest_row, summary_lines, tiny_search_model
from milnce.search.server import Searcher, make_server, serve_in_thread

MAX_PEAK_MIB, MAX_GROWTH_MIB = 24.0, 12.0   # the file is 8 MiB and 16 clients read it at once: a copy each is 128


@pytest.mark.slow
def test_sixteen_clients_fifty_requests_each(tmp_path):
    model = tiny_search_model()
    index_dir, large = build_page_index(tmp_path, model, file_mb=8.0)
    searcher = Searcher(index_dir, model=model, thumb_cache=4)
    server = make_server(searcher, port=0)
    serve_in_thread(server)
    try:
        row, _ = largest_row(searcher)
        result = PageLoad("127.0.0.1", server.server_address[1], row, large, rows=len(searcher.index)).run(16, 50)
    finally:
        server.shutdown()
        server.server_close()
    print("\n".join(summary_lines(result)))
    assert result["requests"] == 800 and result["failed"] == 0, result["failures"]
    assert result["peak_over_baseline_mib"] < MAX_PEAK_MIB and result["rss_growth_mib"] < MAX_GROWTH_MIB, result
    assert searcher.thumbnail_cache_info().currsize <= 4

"""The search page's HTML (rendered on the server; every query HTML-escaped) and the JSON form of the results."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Dict, List, Optional


def results_json(results: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The CLI/HTTP contract: {video, start, end, score} per moment."""
    return [{"video": r["video"], "start": r["start"], "end": r["end"], "score": round(r["score"], 6)}
            for r in results]


def _fmt_time(t: float) -> str:
    m, s = divmod(float(t), 60)
    return f"{int(m)}:{s:04.1f}"


PAGE_STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;background:#fafafa;color:#222}
form{margin-bottom:18px} input[type=text]{width:420px;font-size:16px;padding:6px}
button{font-size:16px;padding:6px 14px} .grid{display:flex;flex-wrap:wrap;gap:14px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px;width:240px}
.card video{width:240px;height:180px;background:#000;display:block}
.meta{font-size:13px;margin-top:6px;word-break:break-all} .score{color:#555}
.empty{color:#777}
"""


def render_page(query: str, results: Optional[List[Dict[str, Any]]], k: int, info: str = "") -> str:
    q = html.escape(query, quote=True)
    parts = ["<!doctype html><html><head><meta charset='utf-8'>",
             f"<title>{'milnce search' + (' – ' + q if q else '')}</title><style>{PAGE_STYLE}</style></head><body>",
             "<h2>milnce moment search</h2>",
             "<form method='get' action='/' id='search-form'>",
             f"<input type='text' name='q' id='query' value='{q}' placeholder='e.g. the red circle spins' autofocus>",
             f"<input type='hidden' name='k' value='{int(k)}'> <button type='submit' id='go'>Search</button></form>",
             f"<div class='info'>{html.escape(info)}</div>"]
    if results is not None:
        parts.append(f"<p id='summary'>{len(results)} moments for <b class='query'>{q}</b></p>")
        if not results:
            parts.append("<p class='empty'>no results</p>")
        parts.append("<div class='grid' id='results'>")
        for rank, r in enumerate(results, 1):
            row, start, end = r["row"], float(r["start"]), float(r["end"])
            name = html.escape(Path(r["video"]).name)
            src = f"/video/{row}#t={start:.2f},{end:.2f}"
            parts.append(
                f"<div class='card result' data-rank='{rank}'>"
                f"<video controls preload='none' poster='/thumb/{row}.jpg' src='{html.escape(src)}'></video>"
                f"<div class='meta'>#{rank} <b>{name}</b><br>{_fmt_time(start)}–{_fmt_time(end)} "
                f"<span class='score'>score {r['score']:.3f}</span></div></div>")
        parts.append("</div>")
    parts.append("</body></html>")
    return "".join(parts)

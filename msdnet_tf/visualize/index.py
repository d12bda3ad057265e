"""``index.html``: every page of a `visualize` call with captions, tables and relative links."""

from __future__ import annotations

import html
import os
import re
from collections.abc import Sequence

__all__ = ["slug", "table_html", "write_index"]


def write_index(out_dir: str, title: str, sections: Sequence[dict]) -> str:
    """Writes ``index.html``: one section per page, with relative links and captions.

    Args:
        out_dir: the folder of the page and of every file it shows.
        title: the page title.
        sections: dicts with ``title``, ``images`` (paths relative to `out_dir`), ``caption``
            and optional ``html`` (a fragment, e.g. a table) and ``links`` ((text, path) pairs).

    Returns:
        The path of ``index.html``.
    """
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;color:#222;"
        "padding:0 1em}h2{margin-top:2em;border-bottom:1px solid #ddd}img{max-width:100%;"
        "border:1px solid #eee;margin:4px}figcaption{color:#555;font-size:0.92em;max-width:"
        "900px}table{border-collapse:collapse;font-size:0.85em}td,th{padding:2px 8px;"
        "text-align:right;border-bottom:1px solid #eee}nav a{margin-right:1em}"
    )
    parts = [
        "<!doctype html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{style}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><nav>",
    ]
    for s in sections:
        parts.append(f"<a href='#{slug(s['title'])}'>{html.escape(s['title'])}</a>")
    parts.append("</nav>")
    for s in sections:
        parts.append(f"<section id='{slug(s['title'])}'><h2>{html.escape(s['title'])}</h2>")
        parts.append("<figure>")
        for image in s.get("images", []):
            link = html.escape(image.replace(os.sep, "/"))
            parts.append(f"<a href='{link}'><img src='{link}' alt='{link}' loading='lazy'></a>")
        parts.append(f"<figcaption>{html.escape(s.get('caption', ''))}</figcaption></figure>")
        if s.get("html"):
            parts.append(s["html"])
        if s.get("links"):
            items = "".join(
                f"<li><a href='{html.escape(p.replace(os.sep, '/'))}'>{html.escape(t)}</a></li>"
                for t, p in s["links"]
            )
            parts.append(f"<details><summary>files</summary><ul>{items}</ul></details>")
        parts.append("</section>")
    parts.append("</body></html>")
    path = os.path.join(out_dir, "index.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts) + "\n")
    return path


def table_html(rows: Sequence[dict], exit_labels: Sequence[str]) -> str:
    """Per-class accuracy rows as an HTML table (fractions, as the blog's Table 1; best bold)."""
    head = "".join(f"<th>{html.escape(e)}</th>" for e in exit_labels)
    lines = [f"<table><tr><th>class</th><th>n</th>{head}</tr>"]
    for r in rows:
        known = [r[e] for e in exit_labels if r[e] is not None]
        best = max(known) if known else None
        cells = "".join(
            "<td>–</td>"
            if r[e] is None
            else (f"<td><b>{r[e]:.3f}</b></td>" if r[e] == best else f"<td>{r[e]:.3f}</td>")
            for e in exit_labels
        )
        name = html.escape(r["class_name"])
        lines.append(f"<tr><td>{name}</td><td>{r['support']}</td>{cells}</tr>")
    return "".join(lines) + "</table>"


def slug(name: str) -> str:
    """`name` with runs of other characters than letters and digits as one underscore."""
    return re.sub(r"[^0-9A-Za-z]+", "_", str(name)).strip("_") or "x"

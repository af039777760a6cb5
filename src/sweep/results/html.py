"""The self-contained index.html: every table, sortable, and the plots embedded.

The page embeds the PNGs as data URIs and carries its own CSS and sorting script, so it opens
from anywhere. Every text is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence

from sweep.results.tables import Table

_NUMBER = re.compile(r"^-?\d+(\.\d+)?([eE][-+]?\d+)?$")


_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
p.intro { color: #555; max-width: 60em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; white-space: nowrap; }
th { background: #f0f0f0; cursor: pointer; user-select: none; position: sticky; top: 0; }
th[data-dir="asc"]::after { content: " \\25B2"; } th[data-dir="desc"]::after { content: " \\25BC"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 1em 0.5em 0; }
""".strip()

_JS = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  var heads = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads, function (th, col) {
    th.addEventListener("click", function () {
      var asc = th.dataset.dir !== "asc";
      Array.prototype.forEach.call(heads, function (h) { delete h.dataset.dir; });
      th.dataset.dir = asc ? "asc" : "desc";
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      function key(row) {
        var text = row.cells[col].textContent.trim();
        return /^-?\\d+(\\.\\d+)?([eE][-+]?\\d+)?$/.test(text) ? parseFloat(text) : text;
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b), c;
        if (typeof x === "number" && typeof y === "number") c = x - y;
        else if (typeof x === "number") c = -1;
        else if (typeof y === "number") c = 1;
        else c = x.localeCompare(y);
        return asc ? c : -c;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
""".strip()


def render_html(
    title: str,
    tables: Sequence[Table],
    images: Sequence[tuple[str, bytes]],
    *,
    source: str = "metrics.json",
) -> str:
    """The page: `images` (alt text, PNG bytes) first, then `tables`; `source` names the store."""
    esc = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{esc(title)}</title>",
        f"<style>\n{_CSS}\n</style>",
        "</head>",
        "<body>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="intro">Generated from {esc(source)} by '
        "tools/merge_benchmarks.py. Click a column header to sort.</p>",
        "<h2>Plots</h2>",
        "<div>",
    ]
    for alt, png in images:
        if png:
            data = base64.b64encode(png).decode("ascii")
            out.append(f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">')
    out.append("</div>")
    for table in tables:
        out += [f"<h2>{esc(table.title)}</h2>", f'<p class="intro">{esc(table.intro)}</p>']
        if not table.rows:
            out.append(f"<p>{esc(table.empty)}</p>")
            continue
        out.append('<table class="sortable">')
        out.append("<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in table.headers))
        out.append("</tr></thead>")
        out.append("<tbody>")
        for row in table.rows:
            cells = "".join(
                f'<td class="num">{esc(c)}</td>' if _NUMBER.match(c) else f"<td>{esc(c)}</td>"
                for c in row
            )
            out.append(f"<tr>{cells}</tr>")
        out.append("</tbody></table>")
    out += [f"<script>\n{_JS}\n</script>", "</body>", "</html>"]
    return "\n".join(out) + "\n"

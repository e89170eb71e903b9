"""The report's HTML page: one file, everything inline (styles, plotly.js, thumbnails), so it opens
offline and can be mailed around.

    >>> html = render_page(title="a.mp4", meta=[...], sections=[("Timeline", "<div>...</div>")], script=js)
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

STYLE = """
:root { color-scheme: light; --ink: #222; --muted: #666; --line: #e2e2e2; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
       background: #fafafa; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 20px 48px; }
h1 { font-size: 22px; margin: 0 0 4px; word-break: break-all; }
h2 { font-size: 16px; margin: 0 0 8px; }
.meta { color: var(--muted); margin: 0 0 16px; }
.meta span + span::before { content: " · "; }
.warn { background: #fff3cd; border: 1px solid #f0d78c; padding: 8px 12px; border-radius: 6px; margin-bottom: 16px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 16px; margin-bottom: 16px; }
.note { color: var(--muted); font-size: 13px; margin: 6px 0 0; }
.thumbs { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 10px; margin-top: 12px; }
.thumbs figure { margin: 0; font-size: 12px; }
.thumbs img { width: 100%; display: block; border-radius: 4px; border-bottom: 5px solid var(--chip); }
.thumbs figcaption { margin-top: 3px; color: var(--muted); overflow: hidden; text-overflow: ellipsis;
                     white-space: nowrap; }
.thumbs b { color: var(--ink); font-weight: 600; }
.elsewhere { border-collapse: collapse; font-size: 13px; }
.elsewhere th, .elsewhere td { text-align: left; vertical-align: top; padding: 6px 10px 6px 0; }
.elsewhere img { height: 64px; display: block; border-radius: 4px; margin-bottom: 3px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid var(--line); }
th { font-weight: 600; color: var(--muted); }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 16px; margin: 4px 0 0; font-size: 13px; }
.chip { display: inline-block; width: 12px; height: 12px; border-radius: 3px; margin-right: 6px; vertical-align: -1px; }
.share { display: inline-block; height: 8px; background: #5b8def; border-radius: 4px; vertical-align: middle; }
"""


def render_page(title: str, meta: Sequence[str], sections: Sequence[tuple[str, str]], script: str,
                warning: str | None = None) -> str:
    """The whole page; `sections` are (heading, HTML body) pairs, `script` the JavaScript the figures need."""
    body = "\n".join(f'<section><h2>{escape(heading)}</h2>\n{html}\n</section>' for heading, html in sections)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>reelflow report: {escape(title)}</title>
<style>{STYLE}</style>
<script>window.PlotlyConfig = {{MathJaxConfig: "local"}};</script>
<script>{script}</script>
</head>
<body>
<main>
<h1>{escape(title)}</h1>
<p class="meta">{"".join(f"<span>{escape(m)}</span>" for m in meta)}</p>
{f'<p class="warn">{escape(warning)}</p>' if warning else ""}
{body}
</main>
</body>
</html>
"""


def legend(colours: dict[str, str]) -> str:
    """A colour chip and name per label, wrapping over as many lines as it needs."""
    return '<p class="legend">' + "".join(
        f'<span><span class="chip" style="background: {colour}"></span>{escape(label)}</span>'
        for label, colour in colours.items()) + "</p>"


def thumbnail_grid(items: Sequence[tuple[str, str, str, str]]) -> str:
    """(data URI, colour, label, caption) per segment, as a grid of small pictures."""
    return '<div class="thumbs">' + "".join(
        f'<figure style="--chip: {colour}"><img src="{uri}" alt="{escape(label)}">'
        f'<figcaption>{escape(caption)} <b>{escape(label)}</b></figcaption></figure>'
        for uri, colour, label, caption in items) + "</div>"


def label_table(rows: Sequence[tuple[str, str, float, float, int, float]]) -> str:
    """(colour, label, seconds, share, segments, mean score) per label, longest first."""
    lines = "".join(
        f'<tr><td><span class="chip" style="background: {colour}"></span>{escape(label)}</td>'
        f'<td class="num">{seconds:.2f}</td><td class="num">{share * 100:.1f}%</td>'
        f'<td><span class="share" style="width: {max(2, round(share * 160))}px"></span></td>'
        f'<td class="num">{segments}</td><td class="num">{mean:.3f}</td></tr>'
        for colour, label, seconds, share, segments, mean in rows)
    return ("<table class=\"labels\"><thead><tr><th>top label</th><th class=\"num\">seconds</th>"
            "<th class=\"num\">share</th><th></th><th class=\"num\">segments</th>"
            "<th class=\"num\">mean score</th></tr></thead>"
            f"<tbody>{lines}</tbody></table>")

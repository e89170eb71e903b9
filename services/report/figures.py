"""The report's plotly figures, as HTML fragments that need plotly.js on the page (inlined once).

    >>> html = timeline_figure(bands(segments), colours)     # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from plotly.colors import qualitative

from pipelines.results import SegmentResult
from services.report.timeline import Band

PALETTE = qualitative.D3 + qualitative.Dark24 + qualitative.Light24  # distinct colours first, paler after
FONT = dict(family="system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", size=12, color="#222")
CONFIG = {"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["lasso2d", "select2d"]}
DOTS_UP_TO = 150  # segments up to which the figures mark each one (a dot, a hairline)
MAX_HEATMAP = 400  # segments shown in the heatmap; more are subsampled evenly (N² cells weigh on the page)


def colours_for(labels: Sequence[str]) -> dict[str, str]:
    """A colour per label, the most frequent first: the same label has the same colour in every figure."""
    return {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(labels)}


def timeline_figure(bands: Sequence[Band], colours: dict[str, str]) -> str:
    """Coloured bands of the top label over time. Its legend is the page's (`page.legend`): a
    plotly legend of dozens of labels would squeeze the plot out of a figure of fixed height."""
    fig = go.Figure()
    hairline = 1 if len(bands) <= DOTS_UP_TO else 0  # between segments, while they are wider than it
    for label, colour in colours.items():
        held = [b for b in bands if b.label == label]
        fig.add_trace(go.Bar(
            name=label, orientation="h", y=["top label"] * len(held), base=[b.start_s for b in held],
            x=[b.end_s - b.start_s for b in held],
            marker=dict(color=colour, line=dict(width=hairline, color="#fff")),
            customdata=[[b.index, b.start_s, b.end_s, b.score] for b in held],
            hovertemplate=f"<b>{_escape(label)}</b><br>segment #%{{customdata[0]}}: %{{customdata[1]:.2f}}–"
                          "%{customdata[2]:.2f} s<br>score %{customdata[3]:.3f}<extra></extra>"))
    fig.update_layout(barmode="overlay", bargap=0.0, height=150, showlegend=False, margin=dict(l=10, r=10, t=10, b=10),
                      xaxis=dict(title="seconds", range=[0, max((b.end_s for b in bands), default=1)]),
                      yaxis=dict(showticklabels=False), font=FONT, plot_bgcolor="#f4f4f4")
    return _html(fig)


def curves_figure(segments: Sequence[SegmentResult], curves: dict[str, list[float | None]],
                  colours: dict[str, str]) -> str:
    """The scores of the top classes at each segment's middle; gaps where a label left the top k."""
    middles = [(s.start_s + s.end_s) / 2 for s in segments]
    fig = go.Figure()
    for i, (label, scores) in enumerate(curves.items()):
        fig.add_trace(go.Scatter(
            name=label, x=middles, y=scores, mode="lines+markers" if len(segments) <= DOTS_UP_TO else "lines",
            connectgaps=False,
            line=dict(color=colours.get(label) or PALETTE[(len(colours) + i) % len(PALETTE)], width=2),
            marker=dict(size=6), hovertemplate=f"<b>{_escape(label)}</b><br>%{{x:.2f}} s: %{{y:.3f}}<extra></extra>"))
    fig.update_layout(height=320, showlegend=True, margin=dict(l=10, r=10, t=10, b=10), font=FONT,
                      plot_bgcolor="#f4f4f4",
                      xaxis=dict(title="seconds (segment middle)"), yaxis=dict(title="score", rangemode="tozero"),
                      legend=dict(orientation="h", y=-0.25, x=0), hovermode="x unified")
    return _html(fig)


def similarity_figure(segments: Sequence[SegmentResult], matrix: np.ndarray) -> tuple[str, bool]:
    """The segment × segment cosine similarity of embeddings; True if segments were subsampled."""
    shown = np.arange(len(segments))
    if len(shown) > MAX_HEATMAP:
        shown = np.linspace(0, len(segments) - 1, MAX_HEATMAP).round().astype(int)
    names = [f"#{segments[i].index} {segments[i].start_s:.1f}s" for i in shown]
    z = matrix[np.ix_(shown, shown)].round(4)
    fig = go.Figure(go.Heatmap(
        z=z, x=names, y=names, colorscale="Viridis",  # scaled to these values: similar videos still show structure
        colorbar=dict(title="cosine", thickness=12),
        hovertemplate="%{y} vs %{x}<br>cosine %{z:.3f}<extra></extra>"))
    side = 520 if len(shown) > 12 else 420
    fig.update_layout(height=side, width=side + 90, margin=dict(l=10, r=10, t=10, b=10), font=FONT,
                      yaxis=dict(autorange="reversed", scaleanchor="x", type="category", nticks=16),
                      xaxis=dict(type="category", tickangle=-45, nticks=16))
    return _html(fig, responsive=False), len(shown) < len(segments)


def plotly_js() -> str:
    """plotly.js itself, to inline once per page (the report loads nothing from the network)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def _html(fig: go.Figure, responsive: bool = True) -> str:
    return pio.to_html(fig, full_html=False, include_plotlyjs=False, config={**CONFIG, "responsive": responsive},
                       default_width="100%" if responsive else f"{fig.layout.width}px",
                       default_height=f"{fig.layout.height}px")


def _escape(text: str) -> str:
    """Labels go into hover templates: keep plotly from reading their braces or tags."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("%{", "%&#123;")

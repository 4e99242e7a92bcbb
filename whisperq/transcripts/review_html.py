"""The review site's HTML pieces: escaping, links, times and figures as text, the page
shell, and bar charts as inline SVG (nothing loaded from anywhere else).

Everything that comes from a transcript is untrusted (a caller can say anything, and it
is written down): it reaches a page only through :func:`esc` (text and attributes) or as
JSON in a data file (:func:`js_call`); links are built with :func:`href`.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any, Final
from urllib.parse import quote

from whisperq.transcripts.conversation import NO_SPEAKER_LABEL

TAG: Final = re.compile(r"(\[[A-Z][A-Z0-9_]*\])")  # a redaction tag, e.g. [CARD_NUMBER]
ASSETS: Final = "assets"  # review.css and review.js, beside index.html
PALETTE_SIZE: Final = 6  # speaker colours: spk-0 ... spk-5 in review.css, then again


def esc(value: object) -> str:
    """Text or an attribute value, HTML-escaped (quotes too)."""
    return html.escape(str(value), quote=True)


def href(path: str) -> str:
    """A relative path as a URL path: every part percent-encoded ('#', '?', '%', spaces,
    non-ASCII), the '/' kept; escape the result with :func:`esc` in an attribute."""
    return quote(path, safe="/")


def marked(text: str) -> str:
    """Text escaped, its redaction tags marked."""
    return "".join(
        f'<mark class="tag">{esc(part)}</mark>' if TAG.fullmatch(part) else esc(part)
        for part in TAG.split(text)
    )


def seek_button(seconds: float, text: str) -> str:
    """A button that plays the call from ``seconds`` (review.js)."""
    return f'<button class="seek" type="button" data-seek="{seconds:.3f}">{esc(text)}</button>'


def js_call(function: str, *args: Any) -> str:
    """``function(arg, ...);`` with the arguments as JSON: a data file the page loads with a
    script tag (file:// pages cannot fetch)."""
    body = ", ".join(json.dumps(arg, ensure_ascii=False, separators=(",", ":")) for arg in args)
    return f"{function}({body});\n"


def clock(seconds: float) -> str:
    """``m:ss``, or ``h:mm:ss`` from an hour."""
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def duration_text(seconds: float) -> str:
    """Seconds, minutes or hours and minutes, whichever reads best."""
    if seconds < 90:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min"


def percent(part: float, whole: float) -> str:
    return f"{part / whole:.0%}" if whole else "-"


def speaker_name(label: str | None) -> str:
    """A label, or what speech without one is called (as in ``report --csv``)."""
    return NO_SPEAKER_LABEL if label is None else label


def speaker_classes(labels: Iterable[str | None]) -> dict[str | None, str]:
    """A colour class per label, in order, speech without a label last (``spk-0`` ...;
    they repeat past the palette)."""
    ordered = sorted(dict.fromkeys(labels), key=lambda label: label is None)
    return {label: f"spk-{i % PALETTE_SIZE}" for i, label in enumerate(ordered)}


def page(title: str, body: str, *, root: str, kind: str, data: dict[str, str] | None = None) -> str:
    """A whole page: ``root`` is the relative way back to the site's top ('' or '../..')."""
    prefix = f"{root}/" if root else ""
    attributes = "".join(f' data-{name}="{esc(value)}"' for name, value in (data or {}).items())
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        # No request leaves the page: not even for an icon.
        '<link rel="icon" href="data:,">\n'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'self\'; '
        "img-src 'self' data:; media-src 'self' https: http: blob:; style-src 'self'; "
        "script-src 'self'; connect-src 'none'; object-src 'none'; base-uri 'none'\">\n"
        f"<title>{esc(title)}</title>\n"
        f'<link rel="stylesheet" href="{esc(prefix)}{ASSETS}/review.css">\n'
        f'</head>\n<body data-page="{esc(kind)}"{attributes}>\n{body}\n'
        f'<script src="{esc(prefix)}{ASSETS}/review.js"></script>\n'
        "</body>\n</html>\n"
    )


def definition_list(items: Iterable[tuple[str, str]], css: str = "facts") -> str:
    """``<dl>`` from (term, HTML) pairs: the terms are escaped here, the values not (they
    are HTML already)."""
    rows = "".join(f"<div><dt>{esc(term)}</dt><dd>{value}</dd></div>" for term, value in items)
    return f'<dl class="{esc(css)}">{rows}</dl>'


def table(
    header: Sequence[str], rows: Iterable[Sequence[str]], css: str = "grid", numeric_from: int = 1
) -> str:
    """A table of HTML cells (escape them first); columns from ``numeric_from`` right-aligned."""
    head = "".join(
        f'<th scope="col"{" class=num" if i >= numeric_from else ""}>{esc(h)}</th>'
        for i, h in enumerate(header)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f"<td{' class=num' if i >= numeric_from else ''}>{cell}</td>"
            for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f'<table class="{esc(css)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


# --- charts -----------------------------------------------------------------------------

Bins = list[tuple[str, int]]


def nice_step(top: float, bins: int = 10) -> float:
    """A round bin width (1, 2 or 5 times a power of ten) so ``bins`` bins cover ``top``."""
    if top <= 0:
        return 1.0
    raw = top / bins
    power = 10 ** math.floor(math.log10(raw))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= raw)


def histogram(values: Sequence[float], step: float, bins: int, label: Any) -> Bins:
    """Counts of ``values`` in ``bins`` bins of ``step`` from 0 (the last one takes the
    rest); ``label(low, high, last)`` names a bin."""
    counts = [0] * bins
    for value in values:
        counts[min(bins - 1, max(0, int(value / step)))] += 1
    return [(label(i * step, (i + 1) * step, i == bins - 1), n) for i, n in enumerate(counts)]


def share_bins(shares: Sequence[float]) -> Bins:
    """Shares (0-1) in ten bins of 10%, each named by where it starts."""

    def label(low: float, high: float, last: bool) -> str:
        return f"{low * 100:.0f}%"

    return histogram([min(share, 1.0) for share in shares], 0.1, 10, label)


def seconds_bins(seconds: Sequence[float]) -> tuple[Bins, str]:
    """Durations in up to ten round bins from 0 to the longest, and their unit: seconds,
    or minutes from 3 minutes on."""
    top = max(seconds, default=0.0)
    unit, name = (60.0, "min") if top >= 180 else (1.0, "s")
    step = nice_step(top / unit) * unit
    bins = max(1, min(10, math.ceil(top / step + 1e-9))) if top > 0 else 1

    def label(low: float, high: float, last: bool) -> str:
        return f"{low / unit:g}-{high / unit:g}"

    return histogram(seconds, step, bins, label), name


def count_bins(counts: Sequence[int]) -> Bins:
    """Counts per call: 0, 1, 2, 3, 4, 5-9, 10 or more."""
    edges = [(0, 0, "0"), (1, 1, "1"), (2, 2, "2"), (3, 3, "3"), (4, 4, "4"), (5, 9, "5-9")]
    found = [(name, sum(1 for c in counts if low <= c <= high)) for low, high, name in edges]
    return [*found, ("10+", sum(1 for c in counts if c >= 10))]


def bar_chart(title: str, bins: Bins, *, note: str = "", css: str = "") -> str:
    """A bar chart as a figure with inline SVG: a bar per bin, its count above it and its
    label below; each bar has a tooltip."""
    width, height, top_pad, bottom_pad = 320, 170, 18, 34
    plot = height - top_pad - bottom_pad
    slot = width / max(1, len(bins))
    peak = max((n for _, n in bins), default=0) or 1
    parts = []
    for i, (name, n) in enumerate(bins):
        bar = plot * n / peak
        x = i * slot + slot * 0.12
        y = top_pad + plot - bar
        parts.append(
            f"<g><title>{esc(name)}: {n} call(s)</title>"
            f'<rect class="bar {esc(css)}" x="{x:.1f}" y="{y:.1f}" width="{slot * 0.76:.1f}" '
            f'height="{max(bar, 0.5 if n else 0):.1f}"></rect>'
            f'<text class="count" x="{x + slot * 0.38:.1f}" y="{y - 4:.1f}">{n}</text>'
            f'<text class="tick" x="{x + slot * 0.38:.1f}" y="{height - bottom_pad + 14}">'
            f"{esc(name)}</text></g>"
        )
    axis = f'<line class="axis" x1="0" x2="{width}" y1="{top_pad + plot}" y2="{top_pad + plot}"/>'
    caption = f"<figcaption>{esc(title)}"
    caption += f'<span class="note">{esc(note)}</span>' if note else ""
    return (
        f'<figure class="chart">{caption}</figcaption>'
        f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{esc(title)}">'
        f"{axis}{''.join(parts)}</svg></figure>"
    )

"""The review site's index page: the batch at a glance (counts, charts, the calls to
listen to first) and the table of calls, whose rows the page loads from data files
(``review.js``). :class:`whisperq.transcripts.review_site.ReviewSite` gathers the facts
call by call and writes the page with :func:`index_page`."""

from __future__ import annotations

import json
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from whisperq.transcripts import conversation
from whisperq.transcripts.conversation import BatchConversation
from whisperq.transcripts.review_html import (
    bar_chart,
    clock,
    count_bins,
    duration_text,
    esc,
    href,
    page,
    percent,
    seconds_bins,
    share_bins,
    speaker_classes,
    speaker_name,
    table,
)

CHARTED_SPEAKERS: Final = 4  # talk-share charts for the labels in the most calls


@dataclass(frozen=True)
class BatchFigures:
    """What the caller knows of the batch beyond its results (from S3): ``submitted``
    files, ``pending`` ones, result JSONs it could not read, and a cost estimate."""

    submitted: int | None = None
    pending: int | None = None
    unreadable: int = 0
    cost_dollars: float | None = None
    cost_note: str = ""


@dataclass(frozen=True)
class IndexFacts:
    """What the index shows: the batch's totals and top lists, and a few numbers per call
    for the charts (never the transcripts)."""

    batch: str
    generated_at: datetime
    done: int
    failed: int
    summary: BatchConversation
    figures: BatchFigures
    durations: array[float]
    non_talk: array[float]  # shares of each call
    interruptions: array[int]  # per call with speaker labels
    shares: dict[str | None, array[float]]  # talk share per speaker label, per call
    languages: list[str]
    categories: list[str]


def page_name(path: str) -> str:
    """A call page's path in the site, from the top: ``calls/<path>.html``."""
    return f"calls/{path}.html"


def index_page(facts: IndexFacts, data: dict[str, str]) -> str:
    """index.html; ``data``: the body's data attributes (how many data files, ...)."""
    summary = facts.summary
    body = (
        _header(facts)
        + '<main class="index">'
        + _counts(facts, summary, facts.figures)
        + _charts(facts, summary)
        + _listen_first(facts, summary)
        + _calls_table(facts, summary)
        + "</main>"
    )
    return page(f"{facts.batch} · whisperq review", body, root="", kind="index", data=data)


def _header(facts: IndexFacts) -> str:
    when = facts.generated_at.strftime("%Y-%m-%d %H:%M UTC")
    return (
        f'<header class="top"><p class="brand">whisperq review</p>'
        f"<h1>{esc(facts.batch)}</h1>"
        f'<p class="sub">written {esc(when)}</p></header>'
    )


def _counts(facts: IndexFacts, summary: BatchConversation, figures: BatchFigures) -> str:
    audio = summary.audio_seconds
    cards = [
        ("calls done", f"{facts.done:,}"),
        ("failed", f"{facts.failed:,}"),
    ]
    if figures.pending:
        cards.append(("pending", f"{figures.pending:,}"))
    if figures.unreadable:
        cards.append(("unreadable results", f"{figures.unreadable:,}"))
    cards += [
        ("audio", f"{audio / 3600:,.2f} h"),
        ("talk", percent(summary.talk_time, audio)),
        ("non-talk", percent(summary.non_talk_time, audio)),
        ("overlap", percent(summary.overlap_time, audio)),
        ("interruptions", f"{summary.interruptions:,}"),
    ]
    if figures.cost_dollars is not None:
        cost = figures.cost_dollars
        cards.append(("cost (estimate)", f"${cost:,.2f}" if cost >= 10 else f"${cost:.3g}"))
    items = "".join(
        f'<li class="card"><span class="value">{esc(value)}</span>'
        f'<span class="label">{esc(label)}</span></li>'
        for label, value in cards
    )
    notes = []
    if figures.submitted is not None:
        notes.append(f"{facts.done:,} of {figures.submitted:,} submitted file(s) done.")
    if figures.cost_note:
        notes.append(figures.cost_note)
    note = f'<p class="hint">{esc(" ".join(notes))}</p>' if notes else ""
    return (
        '<section class="counts" aria-label="Counts">'
        f'<ul class="cards">{items}</ul>{note}</section>'
    )


def _charts(facts: IndexFacts, summary: BatchConversation) -> str:
    if not facts.done:
        return ""
    charts = []
    classes = speaker_classes(s.speaker for s in summary.speakers)
    busiest = sorted(summary.speakers, key=lambda s: -s.calls)[:CHARTED_SPEAKERS]
    for s in busiest:
        charts.append(
            bar_chart(
                f"Talk share: {speaker_name(s.speaker)}",
                share_bins(facts.shares.get(s.speaker, array("d"))),
                note=f"{s.calls:,} call(s); {duration_text(s.talk_time)} in all",
                css=classes[s.speaker],
            )
        )
    charts.append(
        bar_chart(
            "Non-talk time (share of the call)",
            share_bins(facts.non_talk),
            note=f"{duration_text(summary.non_talk_time)} in all",
            css="silence",
        )
    )
    if len(facts.interruptions):
        charts.append(
            bar_chart(
                "Interruptions per call",
                count_bins(facts.interruptions),
                note=f"{summary.interruptions:,} in all",
                css="overlap",
            )
        )
    durations, unit = seconds_bins(facts.durations)
    charts.append(
        bar_chart(
            f"Call durations ({unit})",
            durations,
            note=f"{duration_text(summary.audio_seconds)} in all",
            css="duration",
        )
    )
    return f'<section class="charts" aria-label="Charts">{"".join(charts)}</section>'


def _link(path: str, seconds: float | None = None) -> str:
    target = href(page_name(path)) + (f"#t={seconds:.2f}" if seconds is not None else "")
    return f'<a href="{esc(target)}">{esc(path)}</a>'


def _listen_first(facts: IndexFacts, summary: BatchConversation) -> str:
    parts = []
    if summary.longest_silences:
        rows = [
            [_link(c.path, c.start), f"{c.seconds:.1f} s", clock(c.start)]
            for c in summary.longest_silences
        ]
        parts.append(
            '<div class="top-list"><h3>Longest silences</h3>'
            + table(("call", "silence", "starts at"), rows)
            + "</div>"
        )
    if summary.most_interruptions:
        rows = [
            [
                _link(c.path),
                str(c.interruptions),
                esc(", ".join(f"{who} {n}" for who, n in c.by_speaker.items() if n)),
            ]
            for c in summary.most_interruptions
        ]
        parts.append(
            '<div class="top-list"><h3>Most interruptions</h3>'
            + table(("call", "interruptions", "by speaker"), rows, numeric_from=1)
            + "</div>"
        )
    if not parts:
        return ""
    return (
        '<section class="listen-first"><h2>Listen to these first</h2>'
        f'<div class="top-lists">{"".join(parts)}</div>'
        f'<p class="hint">Interruptions: a speaker starting while another still speaks '
        f"for more than {conversation.TOLERANCE_S} s.</p></section>"
    )


def _calls_table(facts: IndexFacts, summary: BatchConversation) -> str:
    def options(name: str, label: str, values: Iterable[tuple[str, str]]) -> str:
        choices = "".join(f'<option value="{esc(v)}">{esc(text)}</option>' for v, text in values)
        return (
            f'<label>{esc(label)} <select id="filter-{name}" data-filter="{name}">'
            f'<option value="">any</option>{choices}</select></label>'
        )

    speakers = [(json.dumps(s.speaker), speaker_name(s.speaker)) for s in summary.speakers]
    controls = [
        '<label class="search">Search <input id="search" type="search" '
        'placeholder="words said, or a file name" autocomplete="off"></label>',
        options("status", "status", [("done", "done"), ("failed", "failed")]),
        options("speaker", "speaker", speakers),
        options("language", "language", [(lang, lang) for lang in sorted(facts.languages)]),
    ]
    if facts.categories:
        controls.append(options("category", "category", [(c, c) for c in sorted(facts.categories)]))
    columns = [
        ("p", "call"),
        ("f", "status"),
        ("d", "duration"),
        ("l", "language"),
        ("t", "talk share"),
        ("n", "non-talk"),
        ("i", "interruptions"),
        ("r", "redacted"),
    ]
    if facts.categories:
        columns.append(("c", "categories"))
    head = "".join(
        f'<th scope="col" data-key="{key}"><button type="button">{esc(name)}</button></th>'
        for key, name in columns
    )
    return (
        '<section class="calls" aria-label="Calls"><h2>Calls</h2>'
        f'<div class="controls">{"".join(controls)}</div>'
        '<p class="status" id="table-status" aria-live="polite">Loading the calls…</p>'
        f'<table class="grid calls-table" id="calls"><thead><tr>{head}</tr></thead>'
        "<tbody></tbody></table>"
        '<nav class="pager" aria-label="Pages">'
        '<button type="button" id="prev">← previous</button>'
        '<span id="page-no"></span><button type="button" id="next">next →</button></nav>'
        "<noscript><p>The table of calls needs JavaScript.</p></noscript></section>"
    )

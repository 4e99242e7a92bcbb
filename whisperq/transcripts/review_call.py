"""One call's review page: an audio player, the transcript as turns per speaker (each word
a seek target, highlighted while it is said), a timeline with a lane per speaker (talk),
overlap, silence, redactions and the QA rules' phrases, and the side panel
(:mod:`whisperq.transcripts.review_panels`). What the page reads of a result:
:mod:`whisperq.transcripts.review_view`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from whisperq.schemas import ConversationMetrics
from whisperq.transcripts.review_html import (
    TAG,
    clock,
    duration_text,
    esc,
    marked,
    page,
    speaker_classes,
    speaker_name,
)
from whisperq.transcripts.review_panels import (
    categories_panel,
    languages_panel,
    metadata_panel,
    metrics_panel,
    options_panel,
    redactions_panel,
)
from whisperq.transcripts.review_view import (
    CallView,
    Interval,
    ReviewSegment,
    ReviewWord,
    category_entries,
    clamp,
    overlaps,
    silences,
    talk_lanes,
    turns,
)

TRACK_WIDTH: Final = 1000.0


# --- the timeline ---------------------------------------------------------------------


Spans = tuple[Iterable[Interval], str, str]  # intervals, CSS class, tooltip


def _track(duration: float, *groups: Spans) -> str:
    """One lane: an SVG stretched to the lane's width, a rect per span (with a tooltip)."""
    scale = TRACK_WIDTH / duration if duration > 0 else 0.0
    rects = "".join(
        f'<rect class="{esc(css)}" x="{s * scale:.2f}" y="0"'
        f' width="{max((e - s) * scale, 1.0):.2f}" height="10">'
        f"<title>{esc(title)} {clock(s)}-{clock(e)} ({e - s:.1f} s)</title></rect>"
        for spans, css, title in groups
        for s, e in spans
    )
    return (
        f'<svg class="track" viewBox="0 0 {TRACK_WIDTH:g} 10" preserveAspectRatio="none"'
        f' aria-hidden="true">{rects}</svg>'
    )


def _lane(name: str, css: str, track: str) -> str:
    return f'<div class="lane"><span class="lane-name {esc(css)}">{esc(name)}</span>{track}</div>'


def timeline(view: CallView, classes: dict[str | None, str]) -> str:
    """The lanes: one per speaker, then overlap, silence and redactions; a time axis."""
    duration = max(view.duration, 0.0)
    lanes = talk_lanes(view.segments, duration)
    redactions = view.redactions or []
    rows = []
    for who in classes:
        marks = [  # redacted spans over the speaker's talk, each with its tag
            ([clamp(r.start, r.end, duration)], "redacted", f"[{r.type}]")
            for r in redactions
            if r.speaker == who or (r.speaker is None and len(classes) == 1)
        ]
        talk = (lanes.get(who, []), f"talk {classes[who]}", speaker_name(who))
        rows.append(_lane(speaker_name(who), classes[who], _track(duration, talk, *marks)))
    together = _track(duration, (overlaps(lanes), "overlap", "overlap"))
    rows.append(_lane("overlap", "overlap", together))
    quiet = _track(duration, (silences(lanes, duration), "silence", "silence"))
    rows.append(_lane("silence", "silence", quiet))
    if redactions:
        tags = [([clamp(r.start, r.end, duration)], "redacted", f"[{r.type}]") for r in redactions]
        rows.append(_lane("redacted", "redacted", _track(duration, *tags)))
    heard = [  # where the QA rules' phrases were heard
        ([clamp(item["start"], item["end"], duration)], "matched", f"{name}: {words}")
        for name, evidence in category_entries(view.categories)
        for item in evidence
        if (words := item.get("words") or item.get("phrase"))
        and isinstance(item.get("start"), int | float)
        and isinstance(item.get("end"), int | float)
    ]
    if heard:
        rows.append(_lane("rules", "matched", _track(duration, *heard)))
    ticks = _axis(duration)
    return (
        '<section class="timeline" aria-label="Timeline: click to seek">'
        f'<div class="lanes">{"".join(rows)}'
        '<div class="overlay"><div class="playhead" id="playhead"></div></div></div>'
        f"{ticks}</section>"
    )


def _axis(duration: float) -> str:
    """Tick labels under the lanes (an SVG that keeps its aspect: text stays round)."""
    if duration <= 0:
        return ""
    step = next(
        (
            s
            for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
            if duration / s <= 10
        ),
        3600 * max(1, round(duration / 36000)),
    )
    labels = []
    t = 0.0
    while t <= duration + 1e-9:
        x = t / duration * TRACK_WIDTH
        anchor = "start" if t == 0 else ("end" if x > TRACK_WIDTH - 20 else "middle")
        labels.append(f'<text x="{x:.1f}" y="16" text-anchor="{anchor}">{clock(t)}</text>')
        t += step
    return (
        '<div class="axis-row"><span class="lane-name"></span>'
        f'<svg class="axis" viewBox="0 0 {TRACK_WIDTH:g} 22" aria-hidden="true">'
        f"{''.join(labels)}</svg></div>"
    )


# --- the transcript ---------------------------------------------------------------------


def _word(start: float, end: float, text: str) -> str:
    css = "w tag" if TAG.search(text) else "w"
    return f'<span class="{css}" data-s="{start:.3f}" data-e="{end:.3f}">{esc(text)}</span>'


def _merged(words: Sequence[ReviewWord]) -> list[tuple[float, float, str]]:
    """(start, end, text) per word, a run of one redaction tag (a card number's words,
    each stored as the tag) as one."""
    found: list[tuple[float, float, str]] = []
    for w in words:
        text = w.word.strip()
        if not text:
            continue
        if found and TAG.fullmatch(text) and found[-1][2] == text:
            found[-1] = (found[-1][0], max(found[-1][1], w.end), text)
        else:
            found.append((w.start, w.end, text))
    return found


def _said(segment: ReviewSegment, call_language: str | None) -> str:
    if segment.words:
        inner = " ".join(_word(*word) for word in _merged(segment.words))
    else:
        text = " ".join(segment.text.split())
        inner = (
            f'<span class="w seg" data-s="{segment.start:.3f}" data-e="{segment.end:.3f}">'
            f"{marked(text)}</span>"
        )
    if segment.language and segment.language != call_language:
        inner = f'<span class="lang" title="language">{esc(segment.language)}</span> {inner}'
    return inner


def transcript(view: CallView, classes: dict[str | None, str]) -> str:
    items = []
    for i, turn in enumerate(turns(view.segments)):
        said = " ".join(_said(segment, view.language) for segment in turn.segments)
        items.append(
            f'<li class="turn {classes.get(turn.speaker, "")}" id="turn-{i}"'
            f' data-s="{turn.start:.3f}" data-e="{turn.end:.3f}">'
            f'<button class="who" type="button" title="Play from here">'
            f'<span class="name">{esc(speaker_name(turn.speaker))}</span> '
            f"<time>{clock(turn.start)}</time></button>"
            f'<p class="said">{said}</p></li>'
        )
    if not items:
        return '<p class="empty">No speech was transcribed in this call.</p>'
    return f'<ol class="transcript" id="transcript">{"".join(items)}</ol>'


# --- the page ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AudioSource:
    """Audio a call page plays: ``url`` is a file name beside the page (percent-encoded
    by :func:`whisperq.transcripts.review_html.href`) or an https URL (presigned)."""

    label: str
    url: str


def player(sources: Sequence[AudioSource], note: str | None, duration: float) -> str:
    if not sources:
        text = note or "No audio for this call."
        return (
            f'<div class="player"><p class="no-audio">{esc(text)}</p>{_clock_line(duration)}</div>'
        )
    first = sources[0]
    switch = ""
    if len(sources) > 1:
        buttons = "".join(
            f'<button class="source{" on" if i == 0 else ""}" type="button"'
            f' data-src="{esc(s.url)}">{esc(s.label)}</button>'
            for i, s in enumerate(sources)
        )
        switch = f'<div class="sources" role="group" aria-label="Audio">{buttons}</div>'
    note_html = f'<p class="hint">{esc(note)}</p>' if note else ""
    return (
        '<div class="player">'
        f'<audio id="player" controls preload="metadata" src="{esc(first.url)}"></audio>'
        f'<span class="source-label" id="source-label">{esc(first.label)}</span>'
        f"{switch}{_clock_line(duration)}{note_html}</div>"
    )


def _clock_line(duration: float) -> str:
    return (
        '<p class="keys"><output id="now">0:00</output> / '
        f"{clock(duration)} · <kbd>Space</kbd> play/pause · <kbd>←</kbd> <kbd>→</kbd> "
        "previous/next turn · click a word or a turn to go there</p>"
    )


def call_page(
    view: CallView,
    *,
    batch: str,
    root: str,
    index: str,
    sources: Sequence[AudioSource] = (),
    audio_note: str | None = None,
    metrics: ConversationMetrics | None = None,
) -> str:
    """The call's page; ``root``: the way back to the site's top from the page's folder,
    ``index``: the link to the index."""
    metrics = metrics or view.conversation()
    labels = [s.speaker for s in metrics.speakers]
    labels += [t.speaker for t in turns(view.segments)]
    classes = speaker_classes(labels)
    header = (
        f'<header class="top"><a class="back" href="{esc(index)}">← {esc(batch)}</a>'
        f"<h1>{esc(view.path)}</h1>"
        f'<p class="sub">{esc(duration_text(view.duration))} · '
        f"{esc(', '.join(view.language_codes) or 'language unknown')} · "
        f"{esc(', '.join(speaker_name(label) for label in classes))}</p></header>"
    )
    main = (
        f'<main class="call"><div class="listen">{player(sources, audio_note, view.duration)}'
        f"{timeline(view, classes)}{transcript(view, classes)}</div>"
        f'<aside class="side">{metrics_panel(metrics, classes)}'
        f"{categories_panel(category_entries(view.categories))}{redactions_panel(view)}"
        f"{languages_panel(view)}{metadata_panel(view)}{options_panel(view)}</aside></main>"
    )
    return page(
        f"{view.path} · {batch}",
        header + main,
        root=root,
        kind="call",
        data={"duration": f"{max(view.duration, 0.0):.3f}"},
    )

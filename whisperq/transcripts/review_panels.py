"""The side panel of a call's review page: conversation metrics, the QA rules'
categories with their evidence, what was redacted (type, when, who: never the value),
languages, metadata, and how the call was transcribed (of the redaction setting, the
pattern *names* only, never their regular expressions)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from whisperq.schemas import ConversationMetrics
from whisperq.transcripts import conversation
from whisperq.transcripts.review_html import (
    clock,
    definition_list,
    duration_text,
    esc,
    marked,
    percent,
    seek_button,
    speaker_name,
    table,
)
from whisperq.transcripts.review_view import CallView, Evidence


def metrics_panel(metrics: ConversationMetrics, classes: dict[str | None, str]) -> str:
    d = metrics.duration
    silence = metrics.longest_silence
    facts = [
        ("duration", esc(duration_text(d))),
        (
            "talk (anyone)",
            f"{esc(duration_text(metrics.talk_time))} ({percent(metrics.talk_time, d)})",
        ),
        (
            "non-talk (silence)",
            f"{esc(duration_text(metrics.non_talk_time))} ({percent(metrics.non_talk_time, d)})",
        ),
        (
            "overlap",
            f"{esc(duration_text(metrics.overlap_time))} ({percent(metrics.overlap_time, d)})",
        ),
        (
            "longest silence",
            f"{silence.seconds:.1f} s at {seek_button(silence.start, clock(silence.start))}"
            if silence
            else "none",
        ),
        ("turns", "-" if metrics.turns is None else str(metrics.turns)),
        ("timings from", esc(metrics.basis)),
    ]
    rows = [
        [
            f'<span class="dot {classes.get(s.speaker, "")}"></span>{esc(speaker_name(s.speaker))}',
            esc(duration_text(s.talk_time)),
            f"{s.talk_share:.0%}",
            str(s.words),
            "-" if s.words_per_minute is None else f"{s.words_per_minute:.0f}",
            "-" if s.interruptions is None else str(s.interruptions),
            "-" if s.turns is None else str(s.turns),
        ]
        for s in metrics.speakers
    ]
    speakers = table(
        ("speaker", "talk", "share", "words", "wpm", "cut in", "turns"), rows, css="grid small"
    )
    return (
        '<section class="panel" id="metrics"><h2>Conversation</h2>'
        f"{definition_list(facts)}{speakers}"
        '<p class="hint">cut in: the times the speaker started while another went on '
        f"for more than {conversation.TOLERANCE_S} s.</p></section>"
    )


def languages_panel(view: CallView) -> str:
    items: list[tuple[str, str]] = []
    if view.languages:
        for item in view.languages:
            items.append((item.language, f"{item.share:.0%} of speech ({item.seconds:.0f} s)"))
    elif view.language:
        probability = view.language_probability
        items.append((view.language, "detected" + (f" ({probability:.0%})" if probability else "")))
    for channel in view.channels or ():
        if channel.language:
            items.append((f"channel {channel.channel}: {channel.speaker}", esc(channel.language)))
    if not items:
        return ""
    return f'<section class="panel"><h2>Language</h2>{definition_list(items)}</section>'


def _value(value: Any) -> str:
    return esc(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))


def metadata_panel(view: CallView) -> str:
    parts = []
    if view.metadata:
        parts.append(definition_list((str(k), _value(v)) for k, v in view.metadata.items()))
    if view.metadata_problems:
        problems = "".join(f"<li>{esc(p)}</li>" for p in view.metadata_problems)
        parts.append(f'<p class="hint">Left out:</p><ul class="problems">{problems}</ul>')
    if not parts:
        return ""
    return f'<section class="panel"><h2>Metadata</h2>{"".join(parts)}</section>'


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, int | float) else esc(value)


def evidence_item(item: dict[str, Any]) -> str:
    """One piece of a rule's evidence, as QA rules write it: a phrase heard (seek to it),
    phrases not said in a window, or a measure over its threshold."""
    who = item.get("speaker")
    by = f"{esc(who)}: " if isinstance(who, str) else ""
    start, end = item.get("start"), item.get("end")
    span = (
        (float(start), float(end))
        if isinstance(start, int | float) and isinstance(end, int | float)
        else None
    )
    if "words" in item or "phrase" in item:
        heard = marked(str(item.get("words") or item.get("phrase")))  # escaped, tags marked
        at = seek_button(span[0], clock(span[0])) + " " if span else ""
        return f"<li>{at}{by}“{heard}”</li>"
    if "absent" in item:
        phrases = item["absent"] if isinstance(item["absent"], list) else [item["absent"]]
        said = ", ".join(f"“{esc(p)}”" for p in phrases)
        window = f" ({clock(span[0])}-{clock(span[1])})" if span else ""
        return f"<li>{by}not said: {said}{window}</li>"
    if "measure" in item:
        return (
            f"<li>{by}{esc(item['measure'])} {_number(item.get('value'))}"
            f" (threshold {_number(item.get('threshold'))})</li>"
        )
    if "not" in item:
        return f"<li>{esc(item['not'])}</li>"
    return ""


def categories_panel(entries: Sequence[tuple[str, Evidence]]) -> str:
    if not entries:
        return ""
    items = []
    for name, evidence in entries:
        why = "".join(evidence_item(item) for item in evidence)
        items.append(
            f'<li><span class="chip">{esc(name)}</span>'
            + (f'<ul class="evidence">{why}</ul>' if why else "")
            + "</li>"
        )
    return (
        '<section class="panel" id="categories"><h2>Categories</h2>'
        f'<ul class="categories">{"".join(items)}</ul></section>'
    )


def redactions_panel(view: CallView) -> str:
    if view.redactions is None:
        return ""
    if not view.redactions:
        body = '<p class="hint">Redaction was on; nothing was found to remove.</p>'
    else:
        rows = [
            [
                f'<mark class="tag">[{esc(r.type)}]</mark>',
                seek_button(r.start, f"{clock(r.start)}-{clock(r.end)}"),
                esc(speaker_name(r.speaker) if r.speaker is not None else "-"),
            ]
            for r in sorted(view.redactions, key=lambda r: r.start)
        ]
        body = table(("removed", "when", "speaker"), rows, numeric_from=3)
    return (
        '<section class="panel" id="redactions"><h2>Redacted</h2>'
        '<p class="hint">What was removed and where; the values are never stored.</p>'
        f"{body}</section>"
    )


def options_panel(view: CallView) -> str:
    """The model and the redaction setting: groups and pattern names, never the patterns."""
    options = view.options
    items: list[tuple[str, str]] = []
    if view.model and view.model.get("name"):
        items.append(("model", esc(view.model["name"])))
    if view.channel_mode:
        items.append(("channels", esc(view.channel_mode)))
    if options.get("diarize"):
        items.append(("speakers found by", "diarization"))
    redact = options.get("redact") or []
    patterns = options.get("redact_patterns") or {}
    if redact or patterns:
        names = [str(g) for g in redact] + [f"{name} (pattern)" for name in sorted(patterns)]
        items.append(("redaction", esc(", ".join(names))))
        items.append(("redacted audio", "yes" if options.get("redact_audio") else "no"))
    if view.finished_at:
        items.append(("transcribed", esc(view.finished_at[:19].replace("T", " ") + " UTC")))
    if not items:
        return ""
    return f'<section class="panel"><h2>Transcription</h2>{definition_list(items)}</section>'

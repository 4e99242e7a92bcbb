"""`whisperq report BATCH`: a batch's conversation metrics (totals, the calls to listen to
first, a CSV with one row per call, the calls' metadata as its last columns)."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel, ConfigDict, ValidationError
from rich.markup import escape
from rich.table import Table

from whisperq import storage
from whisperq.batches import tracking
from whisperq.cli import review
from whisperq.cli.app import (
    JsonFlag,
    app,
    duration_text,
    err,
    out,
    print_json,
    settings_for_storage,
)
from whisperq.errors import UsageError, WhisperqError
from whisperq.qa_rules import Rule, load_rules, rule_names
from whisperq.settings import Settings
from whisperq.transcripts import conversation
from whisperq.transcripts.categories import categorize_call
from whisperq.transcripts.conversation import (
    BatchConversation,
    CallMetrics,
    ConversationMetrics,
    CsvValue,
)


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Word(_Lenient):
    start: float
    end: float
    word: str
    speaker: str | None = None


class _Segment(_Lenient):
    start: float
    end: float
    text: str
    speaker: str | None = None
    words: list[_Word] | None = None


class _Channel(_Lenient):
    speaker: str


class _ResultView(_Lenient):
    """What the report needs from a result JSON (other fields ignored, so results of any
    worker version with these are read)."""

    path: str
    duration: float
    segments: list[_Segment]
    channels: list[_Channel] | None = None
    metrics: dict[str, Any] | None = None  # absent in results written before metrics
    metadata: dict[str, Any] | None = None  # the call's own fields, when it has some
    metadata_problems: list[str] | None = None

    def conversation(self) -> ConversationMetrics:
        """The stored metrics; computed from the segments when absent (or of a shape this
        version does not know)."""
        if self.metrics is not None:
            try:
                return ConversationMetrics.model_validate(self.metrics)
            except ValidationError:
                pass
        labels = [channel.speaker for channel in self.channels or ()]
        return conversation.conversation_metrics(self.segments, self.duration, speakers=labels)


CallMetadata = dict[str, Any]  # a call's metadata fields, and "metadata_problems"


@dataclass
class BatchCalls:
    """What the report reads from a batch's results."""

    calls: list[CallMetrics]  # (path, metrics), sorted by path
    unreadable: int  # results that could not be read (tracking.read_results)
    metadata: dict[str, CallMetadata]  # of the calls that have some, by path
    matched: dict[str, list[dict[str, Any]]]  # with rules: each call's categories


def read_calls(
    settings: Settings, s3: Any, batch: str, threads: int = 16, rules: Sequence[Rule] = ()
) -> BatchCalls:
    """Every finished result of the batch, its metrics, metadata and (with ``rules``, applied
    to the stored transcript) categories."""
    keys = tracking.result_keys(settings, s3, batch)
    views, unreadable = tracking.read_results(settings, s3, keys, _ResultView, threads)
    calls = sorted(((view.path, view.conversation()) for view in views), key=lambda c: c[0])
    metadata = {
        view.path: (view.metadata or {})
        | ({"metadata_problems": view.metadata_problems} if view.metadata_problems else {})
        for view in views
        if view.metadata or view.metadata_problems
    }
    matched = {
        view.path: categorize_call(rules, view.segments, view.duration, view.conversation())
        for view in views
        if rules
    }
    return BatchCalls(calls, unreadable, metadata, matched)


def category_columns(
    rows: Sequence[Sequence[CsvValue]], names: Sequence[str], matched: Mapping[str, Any]
) -> list[list[CsvValue]]:
    """``rows`` with a column per rule (``rule_<name>``: 1 matched, 0 not)."""
    if not names:
        return [list(row) for row in rows]
    table: list[list[CsvValue]] = [[*rows[0], *(f"rule_{name}" for name in names)]]
    for row in rows[1:]:
        hit = {item["rule"] for item in matched.get(str(row[0]), [])}
        table.append([*row, *(1 if name in hit else 0 for name in names)])
    return table


def _by_rule(rules: Sequence[Rule], matched: Mapping[str, Any]) -> dict[str, Any]:
    return {
        rule.name: [
            {"path": path, "evidence": item["evidence"]}
            for path, found in sorted(matched.items())
            for item in found
            if item["rule"] == rule.name
        ]
        for rule in rules
    }


def _print_rules(rules: Sequence[Rule], matched: Mapping[str, Any], calls: int) -> None:
    table = Table(title="categories (--category RULE lists the calls)")
    table.add_column("rule")
    table.add_column("calls", justify="right")
    table.add_column("share", justify="right")
    for rule, found in _by_rule(rules, matched).items():
        table.add_row(escape(rule), str(len(found)), _share(len(found), calls))
    out.print(table)


def _print_category(name: str, matched: Mapping[str, Any]) -> None:
    calls = _by_rule([Rule(name)], matched)[name]
    out.print(f"{len(calls)} call(s) in {name!r}:", highlight=False)
    for call in calls:
        out.print(escape(call["path"]), highlight=False)
        for item in call["evidence"]:
            out.print(f"  {escape(_evidence_text(item))}", highlight=False)


def _evidence_text(item: Mapping[str, Any]) -> str:
    if "words" in item:
        who = f"{item['speaker']}: " if item.get("speaker") else ""
        return f'{_clock(item["start"])} {who}"{item["words"]}"'
    if "absent" in item:
        who = f" by {item['speaker']}" if item.get("speaker") else ""
        window = f"{_clock(item['start'])}-{_clock(item['end'])}"
        return f"not said{who} in {window}: {', '.join(item['absent'])}"
    if "measure" in item:
        who = f" ({item['speaker']})" if item.get("speaker") else ""
        return f"{item['measure']}{who}: {item['value']} (limit {item['threshold']})"
    return "; ".join(f"{key}: {value}" for key, value in item.items())


def metadata_columns(
    rows: Sequence[Sequence[CsvValue]], metadata: Mapping[str, CallMetadata]
) -> list[list[CsvValue]]:
    """``rows`` (a header, then one row per call, its path first) with a column for each
    metadata field any call has, ``meta_<name>`` in name order, and ``metadata_problems``
    (joined by "; ") when a call has some; nothing added when no call has metadata.
    Numbers and true/false as JSON writes them, null as an empty cell."""
    names = sorted({name for fields in metadata.values() for name in fields} - {_PROBLEMS})
    problems = any(_PROBLEMS in fields for fields in metadata.values())
    header = [*rows[0], *(f"meta_{name}" for name in names)]
    if problems:
        header.append(_PROBLEMS)
    table: list[list[CsvValue]] = [header]
    for row in rows[1:]:
        fields = metadata.get(str(row[0]), {})
        cells = [_cell(fields.get(name)) for name in names]
        if problems:
            cells.append("; ".join(fields.get(_PROBLEMS, [])))
        table.append([*row, *cells])
    return table


_PROBLEMS = "metadata_problems"


def _cell(value: Any) -> CsvValue:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)  # 42, 1.5, true, false


@app.command()
def report(
    batch: Annotated[str, typer.Argument(help="The batch to report on.")],
    as_csv: Annotated[
        bool, typer.Option("--csv", help="One row per call as CSV on stdout, header first.")
    ] = False,
    as_json: JsonFlag = False,
    top: Annotated[int, typer.Option("--top", min=0, help="Calls in each of the top lists.")] = 10,
    threads: Annotated[
        int, typer.Option("--threads", min=1, max=64, help="Result JSONs read at once.")
    ] = 16,
    rules_file: Annotated[
        Path | None,
        typer.Option(
            "--rules",
            help="QA rules (TOML) applied to the stored transcripts, without transcribing "
            "again: how many calls each matches; with --csv a column per rule.",
        ),
    ] = None,
    category: Annotated[
        str | None,
        typer.Option(
            "--category",
            help="With --rules: list the calls this rule matches, with the evidence "
            "(who said what, when), to listen to first.",
        ),
    ] = None,
    html: Annotated[
        Path | None,
        typer.Option(
            "--html",
            help="Write the batch's review site into this folder instead: index.html (the "
            "batch at a glance, a table of calls) and a page per call (audio, transcript, "
            "timeline); prints the path of index.html to open.",
        ),
    ] = None,
    presign: Annotated[
        int | None,
        typer.Option(
            "--presign",
            metavar="HOURS",
            help="With --html: link each call's audio in S3 (presigned URLs valid this many "
            "hours, 1-168) instead of copying it beside the page.",
        ),
    ] = None,
    include_original_audio: Annotated[
        bool,
        typer.Option(
            "--include-original-audio",
            help="With --html: also offer the original recording of redacted calls (it "
            "holds what redaction removed); without it, only their redacted audio.",
        ),
    ] = False,
) -> None:
    """Conversation metrics of a batch: talk and non-talk time, talk time and speed per
    speaker, interruptions, the longest silences. Totals and the calls with the longest
    silences and the most interruptions, or one row per call with --csv (the calls'
    metadata last: a meta_<name> column per field, and metadata_problems).

    Reads every result JSON of the batch (--threads at a time); results written before
    whisperq stored metrics get them computed from their segments.

    Example: `whisperq report weekly --csv > calls.csv`; `whisperq report weekly --html
    review/` writes the review site (open review/index.html in a browser).
    """
    review.check_options(html, presign, include_original_audio, as_csv, as_json, bool(rules_file))
    if html is not None:
        review.run(
            batch,
            html,
            presign_hours=presign,
            include_original_audio=include_original_audio,
            top=top,
            threads=threads,
        )
        return
    if as_csv and as_json:
        raise UsageError("--csv and --json do not go together: choose one.")
    rules = load_rules(rules_file) if rules_file is not None else []  # wrong rules: exit 2
    if category is not None and category not in rule_names(rules):
        raise UsageError(f"--category {category!r} names no rule of --rules: {rule_names(rules)}")
    settings = settings_for_storage()
    s3 = storage.client(settings, "s3")
    view = tracking.load_batch(settings, s3, batch)
    if view is None:
        raise WhisperqError(f"No batch named {batch!r} on {settings.target}.")
    with err.status(f"Reading the results of {batch}..."):
        read = read_calls(settings, s3, batch, threads, rules)
    calls, unreadable, metadata, matched = read.calls, read.unreadable, read.metadata, read.matched
    if not calls:
        raise WhisperqError(
            f"Batch {batch!r} has no finished results yet ({len(view.files)} file(s) "
            f"submitted): `whisperq wait {batch}`, then ask again."
        )
    if unreadable:
        err.print(f"[yellow]{unreadable} result JSON(s) could not be read; not counted.")
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        rows = metadata_columns(conversation.csv_rows(calls), metadata)
        writer.writerows(category_columns(rows, rule_names(rules), matched))
        return
    summary = conversation.batch_conversation(calls, top)
    if as_json:
        extra = {"categories": _by_rule(rules, matched)} if rules else {}
        print_json(
            {
                "batch": batch,
                "unreadable_results": unreadable,
                **summary.model_dump(mode="json"),
                **extra,
            }
        )
        return
    if category is not None:
        _print_category(category, matched)
        return
    _print_report(batch, summary, len(view.files))
    if rules:
        _print_rules(rules, matched, len(calls))


def _seconds(value: float) -> str:
    return f"{value:.1f} s"


def _clock(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}:{rest:02d}"


def _share(part: float, whole: float) -> str:
    return f"{part / whole:.0%}" if whole else "-"


def _table(title: str, columns: tuple[str, ...], left: set[str]) -> Table:
    """A table with these columns: text columns (``left``) to the left, figures right."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="left" if column in left else "right")
    return table


def _print_report(batch: str, summary: BatchConversation, submitted: int) -> None:
    audio = summary.audio_seconds
    totals = _table(
        f"conversation metrics of {batch} ({summary.calls} call(s))",
        ("", "time", "share of audio", "words/min", "interruptions"),
        left={""},
    )
    totals.add_row("audio", duration_text(audio), "", "", "")
    totals.add_row(
        "talk (anyone)", duration_text(summary.talk_time), _share(summary.talk_time, audio), "", ""
    )
    totals.add_row(
        "non-talk (silence)",
        duration_text(summary.non_talk_time),
        _share(summary.non_talk_time, audio),
        "",
        "",
    )
    totals.add_row(
        "overlap", duration_text(summary.overlap_time), _share(summary.overlap_time, audio), "", ""
    )
    for speaker in summary.speakers:
        name = "speech, no speaker labels" if speaker.speaker is None else speaker.speaker
        totals.add_row(
            f"talk: {escape(name)} ({speaker.calls} call(s))",
            duration_text(speaker.talk_time),
            _share(speaker.talk_time, audio),
            "-" if speaker.words_per_minute is None else f"{speaker.words_per_minute:.0f}",
            "-" if speaker.interruptions is None else str(speaker.interruptions),
        )
    out.print(totals)
    if summary.longest_silences:
        silences = _table("longest silences", ("file", "silence", "starts at"), left={"file"})
        for item in summary.longest_silences:
            silences.add_row(escape(item.path), _seconds(item.seconds), _clock(item.start))
        out.print(silences)
    if summary.most_interruptions:
        cut_in = _table(
            "most interruptions",
            ("file", "interruptions", "by speaker"),
            left={"file", "by speaker"},
        )
        for call in summary.most_interruptions:
            by_speaker = ", ".join(f"{who} {n}" for who, n in call.by_speaker.items() if n)
            cut_in.add_row(escape(call.path), str(call.interruptions), escape(by_speaker))
        out.print(cut_in)
    elif any(speaker.speaker is not None for speaker in summary.speakers):
        out.print("No interruptions.", highlight=False)
    out.print(
        f"{summary.calls} of {submitted} file(s) finished. Interruptions: a speaker starting "
        f"while another still speaks for more than {conversation.TOLERANCE_S} s.",
        highlight=False,
    )

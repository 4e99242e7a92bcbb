"""`whisperq report BATCH`: a batch's conversation metrics (totals, the calls to listen to
first, a CSV with one row per call, the calls' metadata as its last columns)."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import typer
from pydantic import BaseModel, ConfigDict, ValidationError
from rich.markup import escape
from rich.table import Table

from whisperq import storage
from whisperq.batches import tracking
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
from whisperq.settings import Settings
from whisperq.transcripts import conversation
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


def read_calls(
    settings: Settings, s3: Any, batch: str, threads: int = 16
) -> tuple[list[CallMetrics], int, dict[str, CallMetadata]]:
    """Every finished result of the batch as (path, metrics), sorted by path, how many
    could not be read (:func:`whisperq.batches.tracking.read_results`), and the metadata
    of the calls that have some, by path."""
    keys = tracking.result_keys(settings, s3, batch)
    views, unreadable = tracking.read_results(settings, s3, keys, _ResultView, threads)
    calls = sorted(((view.path, view.conversation()) for view in views), key=lambda c: c[0])
    metadata = {
        view.path: (view.metadata or {})
        | ({"metadata_problems": view.metadata_problems} if view.metadata_problems else {})
        for view in views
        if view.metadata or view.metadata_problems
    }
    return calls, unreadable, metadata


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
) -> None:
    """Conversation metrics of a batch: talk and non-talk time, talk time and speed per
    speaker, interruptions, the longest silences. Totals and the calls with the longest
    silences and the most interruptions, or one row per call with --csv (the calls'
    metadata last: a meta_<name> column per field, and metadata_problems).

    Reads every result JSON of the batch (--threads at a time); results written before
    whisperq stored metrics get them computed from their segments.

    Example: `whisperq report weekly --csv > calls.csv`
    """
    if as_csv and as_json:
        raise UsageError("--csv and --json do not go together: choose one.")
    settings = settings_for_storage()
    s3 = storage.client(settings, "s3")
    view = tracking.load_batch(settings, s3, batch)
    if view is None:
        raise WhisperqError(f"No batch named {batch!r} on {settings.target}.")
    with err.status(f"Reading the results of {batch}..."):
        calls, unreadable, metadata = read_calls(settings, s3, batch, threads)
    if not calls:
        raise WhisperqError(
            f"Batch {batch!r} has no finished results yet ({len(view.files)} file(s) "
            f"submitted): `whisperq wait {batch}`, then ask again."
        )
    if unreadable:
        err.print(f"[yellow]{unreadable} result JSON(s) could not be read; not counted.")
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerows(metadata_columns(conversation.csv_rows(calls), metadata))
        return
    summary = conversation.batch_conversation(calls, top)
    if as_json:
        print_json(
            {"batch": batch, "unreadable_results": unreadable, **summary.model_dump(mode="json")}
        )
        return
    _print_report(batch, summary, len(view.files))


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

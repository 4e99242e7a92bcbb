"""The review site of a batch: static HTML that works offline (open ``index.html`` from
disk, or publish the folder behind your own access control; nothing in it calls out).

::

    index.html                 the batch at a glance: counts, charts, the calls to listen
                               to first, and a table of calls (sort, filter, search)
    assets/review.css, .js     the style and the behaviour of every page
    data/calls-NNNN.js         the table's rows, CHUNK_ROWS a file, loaded one after the
                               other (the first page shows as soon as the first is in)
    data/text-NNNN.js          the calls' text, loaded only when someone searches
    calls/<path>.html          one page per call, its audio copied beside it

:class:`ReviewSite` writes it as calls arrive (``add_call``, ``add_failure``, then
``finish``): a call's page and its row are written at once and the transcript dropped, so
memory stays flat whatever the batch's size (what is kept per call is a few numbers for
the charts). The index page is :mod:`whisperq.transcripts.review_index`'s, a call's page
:mod:`whisperq.transcripts.review_call`'s. Reading S3 is the caller's
(``whisperq.cli.review``); this module writes files only.
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel

from whisperq import keys
from whisperq.errors import WhisperqError
from whisperq.schemas import ConversationMetrics
from whisperq.transcripts.conversation import (
    BatchConversation,
    CallInterruptions,
    CallSilence,
    SpeakerTotals,
)
from whisperq.transcripts.review_call import AudioSource, call_page
from whisperq.transcripts.review_html import ASSETS, href, js_call
from whisperq.transcripts.review_index import BatchFigures, IndexFacts, index_page, page_name
from whisperq.transcripts.review_view import CallView

CHUNK_ROWS: Final = 1000  # table rows per data file
ASSET_FILES: Final = ("review.css", "review.js")


class _Tally:
    """:func:`whisperq.transcripts.conversation.batch_conversation`, one call at a time:
    the same totals and top lists, keeping only ``top`` calls of each list."""

    def __init__(self, top: int) -> None:
        self.top = top
        self.calls = 0
        self.audio = self.talk = self.non_talk = self.overlap = 0.0
        # label -> [calls, talk seconds, words, interruptions, counted at least once]
        self.speakers: dict[str | None, list[Any]] = {}
        self.silences: list[CallSilence] = []
        self.cut_in: list[CallInterruptions] = []

    def add(self, path: str, metrics: ConversationMetrics) -> None:
        self.calls += 1
        self.audio += metrics.duration
        self.talk += metrics.talk_time
        self.non_talk += metrics.non_talk_time
        self.overlap += metrics.overlap_time
        for s in metrics.speakers:
            entry = self.speakers.setdefault(s.speaker, [0, 0.0, 0, 0, False])
            entry[0] += 1
            entry[1] += s.talk_time
            entry[2] += s.words
            if s.interruptions is not None:
                entry[3] += s.interruptions
                entry[4] = True
        if self.top <= 0:
            return
        if metrics.longest_silence is not None:
            silence = metrics.longest_silence
            self.silences.append(
                CallSilence(path=path, seconds=silence.seconds, start=silence.start)
            )
        counts = {
            s.speaker: s.interruptions
            for s in metrics.speakers
            if s.speaker is not None and s.interruptions is not None
        }
        if sum(counts.values()) > 0:
            self.cut_in.append(
                CallInterruptions(path=path, interruptions=sum(counts.values()), by_speaker=counts)
            )
        if len(self.silences) > 4 * self.top + 64:
            self.silences = self._silences()
        if len(self.cut_in) > 4 * self.top + 64:
            self.cut_in = self._cut_in()

    def _silences(self) -> list[CallSilence]:
        return sorted(self.silences, key=lambda c: (-c.seconds, c.path))[: self.top]

    def _cut_in(self) -> list[CallInterruptions]:
        return sorted(self.cut_in, key=lambda c: (-c.interruptions, c.path))[: self.top]

    def summary(self) -> BatchConversation:
        speakers = [
            SpeakerTotals(
                speaker=label,
                calls=calls,
                talk_time=round(talk, 3),
                words=words,
                words_per_minute=round(words / (talk / 60), 1) if talk > 0 else None,
                interruptions=interruptions if counted else None,
            )
            for label, (calls, talk, words, interruptions, counted) in self.speakers.items()
        ]
        return BatchConversation(
            calls=self.calls,
            audio_seconds=round(self.audio, 3),
            talk_time=round(self.talk, 3),
            non_talk_time=round(self.non_talk, 3),
            overlap_time=round(self.overlap, 3),
            interruptions=sum(s.interruptions or 0 for s in speakers),
            speakers=speakers,
            longest_silences=self._silences(),
            most_interruptions=self._cut_in(),
        )


class _Chunks:
    """A data file's items, written every ``size`` items as ``function(n, [...]);``."""

    def __init__(self, folder: Path, stem: str, function: str, size: int) -> None:
        self.folder, self.stem, self.function, self.size = folder, stem, function, size
        self.items: list[Any] = []
        self.written = 0

    def add(self, item: Any) -> None:
        self.items.append(item)
        if len(self.items) >= self.size:
            self.flush()

    def flush(self) -> None:
        if not self.items:
            return
        path = self.folder / f"{self.stem}-{self.written:04d}.js"
        path.write_text(js_call(self.function, self.written, self.items), encoding="utf-8")
        self.written += 1
        self.items = []


class ReviewSite:
    """Writes the review site of ``batch`` into ``out`` (see the module's docstring).

    ``top``: calls in each "listen to first" list. Files of an earlier run in ``out`` are
    overwritten; its data files are removed first (a smaller batch has fewer).
    """

    def __init__(
        self,
        out: Path,
        batch: str,
        *,
        top: int = 10,
        chunk_rows: int = CHUNK_ROWS,
        generated_at: datetime | None = None,
    ) -> None:
        self.out, self.batch, self.top = Path(out), batch, top
        self.generated_at = generated_at or datetime.now(UTC)
        self.out.mkdir(parents=True, exist_ok=True)
        data = self.out / "data"
        data.mkdir(exist_ok=True)
        for stale in [*data.glob("calls-*.js"), *data.glob("text-*.js")]:
            stale.unlink()
        self._copy_assets()
        self.chunk_rows = chunk_rows
        self._rows = _Chunks(data, "calls", "WQ.rows", chunk_rows)
        self._texts = _Chunks(data, "text", "WQ.text", chunk_rows)
        self._tally = _Tally(top)
        self.done = 0
        self.failed = 0
        self.failed_audio = 0.0
        # per call, for the charts: a few numbers, never the transcript
        self._durations = array("d")
        self._non_talk = array("d")
        self._interruptions = array("i")
        self._shares: dict[str | None, array[float]] = {}
        self._languages: dict[str, None] = {}
        self._categories: dict[str, None] = {}

    def _copy_assets(self) -> None:
        target = self.out / ASSETS
        target.mkdir(exist_ok=True)
        folder = resources.files("whisperq.transcripts") / "review_assets"
        for name in ASSET_FILES:
            (target / name).write_bytes((folder / name).read_bytes())

    # --- where things go ------------------------------------------------------------

    def audio_file(self, path: str, name: str) -> Path:
        """Where a copy of the call's audio goes (beside its page): ``name`` is a file
        name, e.g. the input's or ``<input>.redacted.wav``; its folder is made."""
        if "/" in name or name in ("", ".", ".."):
            raise WhisperqError(f"not a file name: {name!r}")
        folder = (self.out / page_name(_checked(path))).parent
        folder.mkdir(parents=True, exist_ok=True)
        return folder / name

    # --- calls ----------------------------------------------------------------------

    def add_call(
        self,
        result: Mapping[str, Any] | BaseModel,
        audio: Sequence[AudioSource] = (),
        audio_note: str | None = None,
    ) -> Path:
        """Write a result's page and its row; the page's path. ``audio``: what the page
        plays, the first by default (:class:`AudioSource`: a file beside the page, see
        :meth:`audio_file`, or a URL); ``audio_note``: why there is none, or which."""
        data = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
        view = CallView.model_validate(data)
        path = _checked(view.path)
        metrics = view.conversation()
        name = page_name(path)
        target = self.out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        depth = name.count("/")
        root = "/".join([".."] * depth)
        html = call_page(
            view,
            batch=self.batch,
            root=root,
            index=f"{root}/index.html",
            sources=audio,
            audio_note=audio_note,
            metrics=metrics,
        )
        target.write_text(html, encoding="utf-8")
        self._count(path, view, metrics)
        return target

    def _count(self, path: str, view: CallView, metrics: ConversationMetrics) -> None:
        self.done += 1
        self._tally.add(path, metrics)
        duration = metrics.duration
        self._durations.append(duration)
        self._non_talk.append(metrics.non_talk_time / duration if duration else 0.0)
        labelled = [s for s in metrics.speakers if s.interruptions is not None]
        if labelled:
            self._interruptions.append(sum(s.interruptions or 0 for s in labelled))
        for s in metrics.speakers:
            self._shares.setdefault(s.speaker, array("d")).append(s.talk_share)
        languages = view.language_codes
        categories = view.category_names
        self._languages.update(dict.fromkeys(languages))
        self._categories.update(dict.fromkeys(categories))
        self._rows.add(
            {
                "p": path,
                "u": href(page_name(path)),
                "d": round(duration, 2),
                "l": languages,
                "s": [s.speaker for s in metrics.speakers],
                "t": [round(s.talk_share, 3) for s in metrics.speakers],
                "n": round(metrics.non_talk_time, 2),
                "i": sum(s.interruptions or 0 for s in labelled) if labelled else None,
                "r": len(view.redactions or ()),
                "c": categories,
                "f": 0,
            }
        )
        self._texts.add(view.text())

    def add_failure(self, path: str, reason: str, duration: float | None = None) -> None:
        """A call that failed: a row (the reason shown), no page."""
        self.failed += 1
        self.failed_audio += duration or 0.0
        self._rows.add(
            {
                "p": path,
                "d": None if duration is None else round(duration, 2),
                "l": [],
                "s": [],
                "t": [],
                "c": [],
                "f": 1,
                "e": reason,
            }
        )
        self._texts.add("")

    # --- the index ------------------------------------------------------------------

    def finish(self, figures: BatchFigures | None = None) -> Path:
        """Write the last data files and index.html; its path."""
        self._rows.flush()
        self._texts.flush()
        facts = IndexFacts(
            batch=self.batch,
            generated_at=self.generated_at,
            done=self.done,
            failed=self.failed,
            summary=self._tally.summary(),
            figures=figures or BatchFigures(),
            durations=self._durations,
            non_talk=self._non_talk,
            interruptions=self._interruptions,
            shares=self._shares,
            languages=sorted(self._languages),
            categories=sorted(self._categories),
        )
        data = {
            "chunks": str(self._rows.written),
            "chunk-rows": str(self.chunk_rows),
            "calls": str(self.done + self.failed),
        }
        index = self.out / "index.html"
        index.write_text(index_page(facts, data), encoding="utf-8")
        return index


def _checked(path: str) -> str:
    """A result's path as a safe relative path in the site (no '..', not absolute)."""
    if keys.normalize_relative_path(path) != path:
        raise WhisperqError(f"not a clean relative path: {path!r}")
    return path

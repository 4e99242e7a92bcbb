"""The JSON documents whisperq writes and sends, as pydantic models.

The same models validate on both sides: the CLI builds a ``TranscriptionJob`` and the
worker validates what arrives, so a malformed payload is rejected with a reason.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from whisperq import errors, keys
from whisperq.qa_rules import RulesError, parse_rules
from whisperq.vocabulary import compile_user_patterns, expand_groups

JOB_SCHEMA_VERSION: Final = 1
BATCH_SCHEMA_VERSION: Final = 2  # batch.json and file entries (1: the old manifest.json)
RESULT_SCHEMA_VERSION: Final = 1
ERROR_SCHEMA_VERSION: Final = 1


def utc_now() -> datetime:
    return datetime.now(UTC)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


ChannelMode = Literal["mix", "split", "auto"]
DEFAULT_SPEAKERS = ("left", "right")


# A batch's QA rules ride in every job payload (SQS: 256 KB a message).
MAX_RULES_BYTES: Final = 32 * 1024


class TranscriptionOptions(_Strict):
    """Per-batch decoding options, chosen at submit time, echoed in every result."""

    language: str | None = Field(None, description="ISO code; None = detect.")
    task: Literal["transcribe", "translate"] = "transcribe"
    beam_size: int | None = Field(None, ge=1, le=20, description="None = worker default.")
    vad: bool | None = Field(None, description="None = worker default.")
    channels: ChannelMode = Field(
        "auto",
        description="Stereo files: mix to mono, split (one speaker per channel), or auto "
        "(split when the channels carry different speech).",
    )
    speakers: tuple[str, str] = Field(
        DEFAULT_SPEAKERS, description="Labels for the left and right channel when split."
    )
    word_timestamps: bool = False
    hotwords: str | None = Field(None, max_length=1000, description="Names and terms to favour.")
    initial_prompt: str | None = Field(None, max_length=1000)
    formats: tuple[keys.ResultFormat, ...] = Field(
        keys.RENDERING_FORMATS, description="Renderings besides the JSON (always written)."
    )
    model: str | None = Field(None, description="None = the worker's model.")
    diarize: bool = Field(
        False,
        description="Who said what on mono (or mixed) audio: a speaker per segment and word; "
        "named by speakers when they are given (the agent by cues in their words, else in "
        "order of first appearance).",
    )
    num_speakers: int | None = Field(
        None, ge=1, le=30, description="With diarize: how many; None = estimated (1 to 6)."
    )
    multilingual: bool = Field(
        False,
        description="Calls that switch language: the language found per segment, each "
        "segment transcribed in its own (multilingual models only).",
    )
    redact: tuple[str, ...] = Field(
        (), description="Redaction groups (pci, pii) and/or entity types; () = off."
    )
    redact_patterns: dict[str, str] = Field(
        default_factory=dict,
        description="The user's own patterns, name -> regex, redacted as [NAME].",
    )
    redact_audio: bool = Field(False, description="Also write the audio with the spans silenced.")
    vocabulary_filter: list[str] | None = Field(
        None,
        max_length=1000,
        description="Words or phrases that must not appear in stored transcripts "
        "(profanity, competitor names): masked, removed or tagged (filter_mode).",
    )
    filter_mode: Literal["mask", "remove", "tag"] = Field(
        "mask", description="mask: ***; remove: the word goes; tag: [FILTERED:word]."
    )
    rules: list[dict[str, Any]] | None = Field(
        None,
        description="QA rules (the [[rule]] tables of a rules file, whisperq.qa_rules): the "
        "worker applies them to the (redacted) transcript; matches in the result's categories.",
    )

    @model_serializer(mode="wrap")
    def _rules_only_when_given(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """No ``rules`` key without rules, no vocabulary filter keys without a filter:
        options, payloads and batch records stay as they were (workers and batches of an
        older version read them)."""
        data: dict[str, Any] = handler(self)
        if data.get("rules") is None:
            data.pop("rules", None)
        if data.get("vocabulary_filter") is None:  # the mode means nothing without one
            data.pop("vocabulary_filter", None)
            if data.get("filter_mode") == "mask":
                data.pop("filter_mode", None)
        return data

    @field_validator("vocabulary_filter")
    @classmethod
    def _filter_entries(cls, entries: list[str] | None) -> list[str] | None:
        if entries is None:
            return None
        cleaned = [" ".join(entry.split()) for entry in entries]
        if not all(cleaned) or any(len(entry) > 100 for entry in cleaned):
            raise ValueError("vocabulary filter entries are words or phrases of 1-100 characters")
        return cleaned

    @field_validator("rules")
    @classmethod
    def _rules_load(cls, tables: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        if tables is None:
            return None
        if len(json.dumps(tables)) > MAX_RULES_BYTES:
            raise ValueError(f"the rules take more than {MAX_RULES_BYTES // 1024} KB")
        try:
            parse_rules({"rule": tables})
        except RulesError as error:
            raise ValueError(str(error)) from None
        return tables

    @property
    def redacting(self) -> bool:
        return bool(self.redact or self.redact_patterns)

    @field_validator("redact")
    @classmethod
    def _known_groups(cls, groups: tuple[str, ...]) -> tuple[str, ...]:
        expand_groups(groups)  # raises ValueError naming the unknown one
        names = [
            g.strip().lower() if g.strip().lower() in ("pci", "pii") else g.strip().upper()
            for g in groups
        ]
        return tuple(dict.fromkeys(names))

    @field_validator("redact_patterns")
    @classmethod
    def _patterns_compile(cls, patterns: dict[str, str]) -> dict[str, str]:
        compile_user_patterns(patterns)
        return patterns

    @model_validator(mode="after")
    def _diarize_on_one_channel(self) -> TranscriptionOptions:
        if self.diarize and self.channels == "split":
            raise ValueError("diarize finds speakers in one channel: use channels mix (or auto)")
        if self.diarize and self.channels == "auto":
            self.channels = "mix"  # the speakers come from the voices, not the channels
        if self.num_speakers is not None and not self.diarize:
            raise ValueError("num_speakers needs diarize")
        return self

    @model_validator(mode="after")
    def _multilingual_needs_a_multilingual_model(self) -> TranscriptionOptions:
        if self.multilingual and self.language:
            raise ValueError("multilingual finds the language per segment: leave language unset")
        if self.multilingual and self.model and self.model.endswith(".en"):
            raise ValueError(
                f"multilingual needs a multilingual model; {self.model} is English only"
            )
        return self

    @model_validator(mode="after")
    def _audio_needs_redaction(self) -> TranscriptionOptions:
        if self.redact_audio and not self.redacting:
            raise ValueError("redact_audio needs redact (e.g. --redact pci) or redact_patterns")
        return self

    @field_validator("speakers")
    @classmethod
    def _labels_fit_every_format(cls, speakers: tuple[str, str]) -> tuple[str, str]:
        for label in speakers:
            if not label.strip() or len(label) > 40 or any(c in label for c in "<>&\n\r,"):
                raise ValueError(
                    f"speaker label {label!r} must be 1-40 characters without < > & , or newlines"
                )
        if speakers[0] == speakers[1]:
            raise ValueError("the two speaker labels must differ")
        return speakers

    @field_validator("formats")
    @classmethod
    def _known_formats_once(cls, formats: tuple[str, ...]) -> tuple[str, ...]:
        wanted = [fmt for fmt in formats if fmt != "json"]  # the JSON is always written
        return tuple(fmt for fmt in keys.RENDERING_FORMATS if fmt in wanted)


# A call's metadata: flat JSON values by name (whisperq.batches.records cleans what comes
# from sidecars, S3 user metadata and CSV files), at most keys.METADATA_MAX_BYTES.
MetadataValue = str | int | float | bool | None
CallMetadata = dict[str, MetadataValue]
MAX_METADATA_PROBLEMS = 20


def check_metadata(metadata: CallMetadata | None) -> CallMetadata | None:
    """``metadata`` if it is within the limit (compact JSON, UTF-8), else ValueError."""
    if metadata is None:
        return None
    if any(isinstance(v, float) and not math.isfinite(v) for v in metadata.values()):
        raise ValueError("metadata values must be JSON numbers (no NaN or infinity)")
    size = len(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False).encode())
    if size > keys.METADATA_MAX_BYTES:
        raise ValueError(f"metadata is {size} bytes, over {keys.METADATA_MAX_BYTES}")
    return metadata


class _WithMetadata(_Strict):
    """The call's metadata and what was wrong with it (``metadata_problems``: one line per
    problem, naming its source; the call was transcribed all the same)."""

    metadata: CallMetadata | None = Field(
        None,
        description="The call's own fields (a sidecar, S3 user metadata, a CSV row): flat "
        f"values, at most {keys.METADATA_MAX_BYTES} bytes as JSON.",
    )
    metadata_problems: list[str] | None = Field(
        None, max_length=MAX_METADATA_PROBLEMS, description="Metadata left out, and why."
    )

    @field_validator("metadata")
    @classmethod
    def _small_enough(cls, metadata: CallMetadata | None) -> CallMetadata | None:
        return check_metadata(metadata)

    @model_serializer(mode="wrap")
    def _only_with_metadata(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """The two fields last, and left out without metadata: payloads, entries and
        results stay as they were (a worker of an older version accepts the payload). A
        result's ``categories`` (QA rules) likewise."""
        data: dict[str, Any] = handler(self)
        for name in ("categories", "metadata", "metadata_problems"):
            value = data.pop(name, None)
            if value is not None:
                data[name] = value
        return data


class CallMetadataRecord(_Strict):
    """``inputs/<batch>/<path>.metadata.json``: the metadata of a call whose sidecar landed
    after its audio (written by the ingest step, read by the worker when it writes the
    result). It applies to the input ingested from the audio last modified at
    ``source_modified`` (a newer recording under the same key is another call)."""

    schema_version: Literal[1] = 1
    batch: str
    path: str
    source: str = Field(description="s3://bucket/key of the sidecar.")
    source_modified: datetime = Field(description="The audio's Last-Modified.")
    metadata: CallMetadata
    metadata_problems: list[str] = Field(default_factory=list)
    written_at: datetime

    @field_validator("metadata")
    @classmethod
    def _small_enough(cls, metadata: CallMetadata) -> CallMetadata:
        return check_metadata(metadata) or {}


class TranscriptionJob(_WithMetadata):
    """One Celery task's payload: one file of one batch.

    Validated on both sides. Keys are derived, never trusted: a payload whose path would
    leave its batch's prefix ('..', absolute) or whose input key is not the one the layout
    gives is refused, so a hostile message cannot make a worker read or write elsewhere.
    """

    schema_version: Literal[1] = JOB_SCHEMA_VERSION
    batch: str
    path: str = Field(description="Relative path of the file inside the batch.")
    input_key: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    options: TranscriptionOptions = TranscriptionOptions()
    entry_key: str | None = Field(
        None,
        description="The file's entry as queued (pending): the worker renames it to its "
        "state from this key, without listing the path's entries (older jobs carry "
        "none: a listing finds it).",
    )
    # and the call's metadata (_WithMetadata), sent only when there is some

    @model_validator(mode="after")
    def _keys_stay_inside_the_batch(self) -> TranscriptionJob:
        keys.validate_batch_name(self.batch)
        if keys.normalize_relative_path(self.path) != self.path:
            raise ValueError(f"path {self.path!r} is not a clean relative path")
        if self.input_key != keys.input_key(self.batch, self.path):
            raise ValueError(f"input_key {self.input_key!r} does not match batch and path")
        if self.entry_key is not None:
            parts = keys.parse_entry(self.batch, self.entry_key)
            if parts is None or parts.path != self.path or parts.state != "pending":
                raise ValueError(
                    f"entry_key {self.entry_key!r} is not a pending entry of batch and path"
                )
        return self


class BatchInfo(_Strict):
    """``batches/<batch>/batch.json``: the batch's options, written once (see
    :mod:`whisperq.batches.records`)."""

    schema_version: Literal[2] = BATCH_SCHEMA_VERSION
    batch: str
    created_at: datetime
    source: str = Field(description="submit, or ingest:<prefix> for S3-event batches.")
    options: TranscriptionOptions = TranscriptionOptions()
    open_until: datetime | None = Field(
        None,
        description="A daily ingest batch takes files until then (its UTC day's end plus a "
        "grace): before it the batch is not finished (whisperq.finished).",
    )
    entry_states: bool = Field(
        False,
        description="Its files' entries carry their state in their keys (done, failed: "
        "whisperq.entry_states); absent in batches made before they did.",
    )


class FileEntry(_WithMetadata):
    """``batches/<batch>/files/<path>/<ms>.json``: one file of a batch, with a job queued."""

    schema_version: Literal[2] = BATCH_SCHEMA_VERSION
    path: str
    input_key: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    duration: float | None = Field(None, description="Seconds, from the file header.")
    submitted_at: datetime
    source: Literal["submit", "ingest"] = "submit"
    origin: str | None = Field(None, description="s3://bucket/key the file was ingested from.")
    # and the call's metadata (_WithMetadata): its job carries it again on a retry

    def job(self, batch: str, options: TranscriptionOptions) -> TranscriptionJob:
        """The task payload for this file (submit, ingest and retry send the same)."""
        return TranscriptionJob(
            batch=batch,
            path=self.path,
            input_key=self.input_key,
            sha256=self.sha256,
            size=self.size,
            options=options,
            entry_key=keys.entry_key(batch, self.path, self.duration),
            metadata=self.metadata,
            metadata_problems=self.metadata_problems,
        )


class Word(_Strict):
    start: float
    end: float
    word: str
    probability: float
    speaker: str | None = None  # set when channels are split
    channel: int | None = None


def words_text(words: Sequence[Word]) -> str:
    """Words as text: faster-whisper's words carry their leading space, the engine's
    stripped ones do not."""
    return "".join(w.word if w.word[:1].isspace() else f" {w.word}" for w in words).strip()


class Segment(_Strict):
    start: float
    end: float
    text: str
    avg_logprob: float
    no_speech_prob: float
    speaker: str | None = Field(None, description="The channel's label when split.")
    channel: int | None = Field(None, description="0 = left, 1 = right, when split.")
    language: str | None = Field(None, description="The segment's own, with multilingual.")
    words: list[Word] | None = Field(None, description="With word_timestamps.")


class RedactedSpan(_Strict):
    """One redacted value: its type and where it was said, never the value."""

    type: str
    start: float
    end: float
    speaker: str | None = None
    channel: int | None = None


class LanguageShare(_Strict):
    language: str
    seconds: float = Field(description="Speech time (segments) in this language.")
    share: float = Field(description="Of all the segments' time.")


class ChannelInfo(_Strict):
    channel: int
    speaker: str
    language: str
    language_probability: float


class SpeakerLabel(_Strict):
    """How a diarized speaker got its name (speech.diarization.name_speakers)."""

    speaker: str = Field(description="The name in the result (agent, customer, ...).")
    found: str = Field(description="Diarization's label: speaker_1, ... by first appearance.")
    decided_by: str = Field(
        description="cue: 'thank you for calling', ... (words in the agent's turns), or "
        "order of appearance."
    )


class Timings(_Strict):
    """Seconds spent in each stage of one job."""

    download: float
    decode: float = Field(0.0, description="0: decoding is streamed, counted in transcribe.")
    transcribe: float = Field(description="Decoding and transcription, window by window.")
    upload: float


class ModelInfo(_Strict):
    name: str
    device: str
    compute_type: str


# --- conversation metrics (computed by whisperq.transcripts.conversation) ---------------

Basis = Literal["words", "segments"]


class Silence(_Strict):
    """A stretch with nobody speaking."""

    start: float
    end: float
    seconds: float


class SpeakerMetrics(_Strict):
    speaker: str | None = Field(description="The label; None: the transcript has none.")
    talk_time: float = Field(description="Seconds: the union of the speaker's utterances.")
    talk_share: float = Field(description="talk_time / duration (0 when duration is 0).")
    words: int
    words_per_minute: float | None = Field(description="None when talk_time is 0.")
    interruptions: int | None = Field(
        description="Utterances that started while another speaker still spoke for more "
        "than TOLERANCE_S; None without speaker labels."
    )
    turns: int | None = Field(description="The speaker's turns; None without speaker labels.")


class ConversationMetrics(_Strict):
    """A result's ``metrics``: see the module's docstring for the definitions."""

    basis: Basis = Field(description="words: from word timings; segments: from segments'.")
    duration: float
    talk_time: float = Field(description="Seconds anyone speaks.")
    non_talk_time: float = Field(description="duration - talk_time: silence on all channels.")
    overlap_time: float = Field(description="Seconds two or more speakers speak at once.")
    longest_silence: Silence | None
    turns: int | None = Field(description="Changes of speaker + 1; None without labels.")
    speakers: list[SpeakerMetrics]


class TranscriptResult(_WithMetadata):
    """``results/<batch>/<path>.json``: written last, so its presence means done. With
    ``metadata`` and ``metadata_problems`` (_WithMetadata) when the call has some."""

    schema_version: Literal[1] = RESULT_SCHEMA_VERSION
    batch: str
    path: str
    input_key: str
    sha256: str
    duration: float
    language: str
    language_probability: float
    channel_mode: Literal["mix", "split"] = Field(
        "mix", description="What was done with the channels (auto resolves to one)."
    )
    channels: list[ChannelInfo] | None = Field(None, description="Per channel, when split.")
    speaker_labels: list[SpeakerLabel] | None = Field(
        None,
        description="With diarize and speakers given: which diarized speaker got which name, "
        "and how it was decided. None otherwise and in older results.",
    )
    languages: list[LanguageShare] | None = Field(
        None, description="With multilingual: each language's share of the speech, largest first."
    )
    model: ModelInfo
    options: dict[str, object] = Field(description="Decoding options actually used.")
    text: str
    segments: list[Segment]
    redactions: list[RedactedSpan] | None = Field(
        None, description="With redaction on: what was redacted, where (never the values)."
    )
    metrics: ConversationMetrics | None = Field(
        None, description="Talk time, silences, interruptions, talk speed (whisperq report)."
    )
    categories: list[dict[str, Any]] | None = Field(
        None,
        description="With QA rules: each rule the call matched, with its evidence (speaker, "
        "start, end, the words).",
    )
    redacted_audio: str | None = Field(
        None, description="Key of the audio with the redacted spans silenced (redact_audio)."
    )
    timings: Timings
    instance_type: str | None = Field(None, description="EC2 type of the worker, if on EC2.")
    worker_id: str
    finished_at: datetime


class ErrorRecord(_Strict):
    """``results/<batch>/<path>.error.json``: a permanent failure and why."""

    schema_version: Literal[1] = ERROR_SCHEMA_VERSION
    batch: str
    path: str
    input_key: str
    reason: str = Field(description="What went wrong and what to do, for a person.")
    kind: Literal["permanent", "transient"] = Field(
        description="permanent: retrying cannot help; transient: retries ran out."
    )
    cause: str | None = Field(
        None,
        description="Why, as far as what to do next goes (errors.FailureCause: not_audio, "
        "input_gone, transient, ...); errors.next_step words the step. None in older records.",
    )
    error_type: str
    attempts: int = Field(description="Tries by the worker that wrote this record.")
    receive_count: int | None = Field(None, description="SQS deliveries of the job so far.")
    worker_id: str
    failed_at: datetime

    @classmethod
    def read(cls, data: Any) -> ErrorRecord:
        """A stored record, as readers take it: fields a newer worker added are left out
        (records are written strictly, read leniently: an older CLI still reads them)."""
        if isinstance(data, dict):
            data = {name: value for name, value in data.items() if name in cls.model_fields}
        return cls.model_validate(data)

    def next_step(self) -> str:
        """The one next step for this file (``errors.next_step``): what its reason ends
        with, and what ``wait`` and ``status`` print."""
        cause = errors.record_cause(self.cause, self.kind, self.error_type)
        return errors.next_step(cause, self.batch, self.path)

"""`whisperq submit` (`status` is in batches_status)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

from whisperq import keys, qa_rules
from whisperq.batches.progress import ProgressHooks
from whisperq.cli.app import (
    JsonFlag,
    app,
    err,
    out,
    print_error,
    print_json,
    settings_for_storage,
)
from whisperq.errors import EXIT_ERROR, InvalidKeyError, UsageError, WhisperqError
from whisperq.schemas import TranscriptionOptions
from whisperq.settings import Settings


def progress_bar() -> Progress:
    """Progress bars on stderr, so stdout stays clean for --json and batch ids."""
    return Progress(
        TextColumn("{task.description:<11}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )


class RichHooks(ProgressHooks):
    """Draws each stage of a library call as its own bar."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: TaskID | None = None

    def stage(self, name: str, total: int) -> None:
        if self.task is not None:
            self.progress.update(self.task, visible=False)
        self.task = self.progress.add_task(name, total=total)

    def advance(self, amount: int = 1) -> None:
        if self.task is not None:
            self.progress.advance(self.task, amount)


def no_batch(batch: str, settings: Settings) -> WhisperqError:
    return WhisperqError(f"No batch named {batch!r} on {settings.target}.")


# --- submit ---------------------------------------------------------------------------

_BATCH_OPTIONS_PANEL = "Transcription options (stored with the batch)"


def _batch_option(flag: str, help: str) -> Any:
    """A submit option that belongs to the batch: unset (None) means the default."""
    return typer.Option(flag, help=help, rich_help_panel=_BATCH_OPTIONS_PANEL)


@app.command()
def submit(
    paths: Annotated[
        list[str],
        typer.Argument(help="Audio files, directories (searched recursively) or quoted globs."),
    ],
    batch: Annotated[
        str | None,
        typer.Option("--batch", "-b", help="Batch name (default: a new timestamped id)."),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Upload and queue files whose content is already in the batch."
        ),
    ] = False,
    channels: Annotated[
        str | None,
        _batch_option(
            "--channels",
            "Stereo files: mix | split (one speaker per channel) | auto (split when the "
            "channels carry different speech; the default).",
        ),
    ] = None,
    speakers: Annotated[
        str | None,
        _batch_option(
            "--speakers", "Labels for the left and right channel when split, e.g. agent,customer."
        ),
    ] = None,
    language: Annotated[
        str | None,
        _batch_option("--language", "Language code (en, de, ...); default: detected per file."),
    ] = None,
    task: Annotated[
        str | None,
        _batch_option("--task", "transcribe (default) | translate (to English)."),
    ] = None,
    word_timestamps: Annotated[
        bool | None,
        _batch_option(
            "--word-timestamps",
            "Words with start, end and probability in the JSON; word timing in the VTT.",
        ),
    ] = None,
    hotwords: Annotated[
        str | None,
        _batch_option("--hotwords", "Names and terms to favour, e.g. 'Acme Fibre, RouterMax'."),
    ] = None,
    initial_prompt: Annotated[
        str | None,
        _batch_option(
            "--initial-prompt", "Text the model reads before the audio (style, vocabulary)."
        ),
    ] = None,
    formats: Annotated[
        str | None,
        typer.Option(
            "--formats",
            "--format",
            help="Renderings to write: any of srt,vtt,txt (default all); the JSON always is.",
            rich_help_panel=_BATCH_OPTIONS_PANEL,
        ),
    ] = None,
    model: Annotated[
        str | None,
        _batch_option(
            "--model",
            "Model for this batch; workers serve their own, others only if allowed "
            "(WHISPERQ_ALLOWED_MODELS), else the file fails with the reason.",
        ),
    ] = None,
    beam_size: Annotated[
        int | None, _batch_option("--beam-size", "Beam width (default: the worker's, 5).")
    ] = None,
    vad: Annotated[
        bool | None,
        _batch_option(
            "--vad/--no-vad", "Skip silence with Silero VAD (default: the worker's, on)."
        ),
    ] = None,
    diarize: Annotated[
        bool | None,
        _batch_option(
            "--diarize",
            "Who said what on mono recordings (or stereo mixed, --channels mix): a speaker "
            "per segment and word, named by --speakers in order of first appearance, else "
            "speaker_1, speaker_2, ...",
        ),
    ] = None,
    num_speakers: Annotated[
        int | None,
        _batch_option("--num-speakers", "With --diarize: how many speakers (default: estimated)."),
    ] = None,
    multilingual: Annotated[
        bool | None,
        _batch_option(
            "--multilingual",
            "Calls that switch language: find the language of every segment and transcribe "
            "each in its own (JSON: segments' language, the languages' shares). Needs a "
            "multilingual model, not *.en.",
        ),
    ] = None,
    redact: Annotated[
        str | None,
        _batch_option(
            "--redact",
            "Remove personal data from every output: pci (card number, expiry, security "
            "code), pii (pci + SSN/national ID, phone, email, date of birth, IBAN, account, "
            "sort code) and/or type names, e.g. pci,PHONE. Your own patterns "
            "(redact_patterns in the config) are added.",
        ),
    ] = None,
    redact_audio: Annotated[
        bool | None,
        _batch_option(
            "--redact-audio",
            "With --redact: also write the audio with the redacted spans silenced "
            "(<file>.redacted.wav next to the results).",
        ),
    ] = None,
    vocabulary_filter: Annotated[
        Path | None,
        _batch_option(
            "--vocabulary-filter",
            "Words that must not appear in stored transcripts (a file, one word or phrase "
            "a line: profanity, competitor names), in every rendering and in the words.",
        ),
    ] = None,
    filter_mode: Annotated[
        str | None,
        _batch_option(
            "--filter-mode",
            "With --vocabulary-filter: mask (***, the default), remove, or tag ([FILTERED:word]).",
        ),
    ] = None,
    rules: Annotated[
        Path | None,
        _batch_option(
            "--rules",
            "QA rules (a TOML file of [[rule]] tables): every result gets the categories it "
            "matches, with evidence. `whisperq report --rules` applies rules afterwards.",
        ),
    ] = None,
    metadata: Annotated[
        Path | None,
        typer.Option(
            "--metadata",
            help="A CSV file of call metadata: a 'path' column (the file's path in the "
            "batch) and any others, one row per call; they appear in each result JSON "
            "('metadata') and as meta_<column> in `report --csv`.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Upload audio and queue one transcription job per file; prints the batch id.

    Relative paths are kept (calls/a/x.wav and calls/b/x.wav stay apart). Files whose
    content is already in the batch are skipped unless --force. Inside directories,
    files without an audio extension are skipped and counted. Transcription options
    belong to the batch: adding files to it later keeps them.

    Example: `whisperq submit examples/calls/ --batch weekly --speakers agent,customer`
    Example: `whisperq submit calls/ --batch weekly --metadata calls.csv`
    """
    from whisperq.batches.submit import submit as run_submit

    given: dict[str, Any] = {
        "channels": channels,
        "speakers": _split_list(speakers),
        "language": language,
        "task": task,
        "word_timestamps": word_timestamps,
        "hotwords": hotwords,
        "initial_prompt": initial_prompt,
        "formats": _split_list(formats),
        "model": model,
        "beam_size": beam_size,
        "vad": vad,
        "diarize": diarize,
        "num_speakers": num_speakers,
        "multilingual": multilingual,
        "redact": _split_list(redact),
        "redact_audio": redact_audio,
        "rules": _rule_tables(rules),
        "vocabulary_filter": _filter_entries(vocabulary_filter),
        "filter_mode": filter_mode,
    }
    if batch is not None:
        _usable_batch_name(batch)
    settings = settings_for_storage()
    if redact is not None and settings.redact_patterns:
        given["redact_patterns"] = settings.redact_patterns
    options = _transcription_options({k: v for k, v in given.items() if v is not None})
    with progress_bar() as progress:
        report = run_submit(
            settings,
            paths,
            batch=batch,
            options=options,
            force=force,
            hooks=RichHooks(progress),
            metadata_csv=metadata,
        )
    if as_json:
        print_json(report.as_dict())
        if report.unusable:
            raise typer.Exit(EXIT_ERROR)
        return
    err.print(
        f"Queued {len(report.queued)} file(s), {report.bytes_uploaded / 1e6:.1f} MB, "
        f"{report.audio_seconds / 60:.1f} min of audio on {settings.target}."
    )
    if report.duplicates:
        err.print(f"Skipped {len(report.duplicates)} already in the batch (--force to redo).")
    if report.skipped_non_audio:
        err.print(f"Skipped {report.skipped_non_audio} non-audio file(s) found in directories.")
    for item in report.unusable:
        print_error(escape(f"not submitted: {str(item.path)!r}: {item.reason}"))
    for path, problems in report.metadata_problems.items():
        err.print(escape(f"metadata of {path}: {'; '.join(problems)}"), highlight=False)
    if report.metadata_unmatched:
        shown = ", ".join(report.metadata_unmatched[:5])
        more = len(report.metadata_unmatched) - 5
        err.print(
            escape(
                f"{len(report.metadata_unmatched)} metadata row(s) name no submitted file: "
                f"{shown}" + (f" and {more} more" if more > 0 else "")
            ),
            highlight=False,
        )
    out.print(report.batch)
    if report.unusable:  # the others are queued; the exit code says not all were
        raise typer.Exit(EXIT_ERROR)


def _filter_entries(path: Path | None) -> list[str] | None:
    """A vocabulary filter file: one word or phrase a line; blank lines and ``#`` comments
    skipped (whisperq.redaction.vocabulary_filter applies them)."""
    if path is None:
        return None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        entries = [entry for line in lines if (entry := line.split("#", 1)[0].strip())]
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"--vocabulary-filter {path}: cannot read it ({error})") from None
    if not entries:
        raise UsageError(f"--vocabulary-filter {path}: no words in it (one a line)")
    return entries


def _rule_tables(path: Path | None) -> list[dict[str, Any]] | None:
    """The [[rule]] tables of a rules file, checked (a wrong rule: exit 2, nothing sent)."""
    if path is None:
        return None
    qa_rules.load_rules(path)
    with path.open("rb") as handle:
        tables: list[dict[str, Any]] = tomllib.load(handle)["rule"]
    return tables


def _usable_batch_name(batch: str) -> None:
    """A batch name given on the command line that breaks the rules is bad usage (2)."""
    try:
        keys.validate_batch_name(batch)
    except InvalidKeyError as error:
        raise UsageError(str(error)) from None


def _split_list(value: str | None) -> list[str] | None:
    return None if value is None else [part.strip() for part in value.split(",") if part.strip()]


def _transcription_options(given: dict[str, Any]) -> TranscriptionOptions | None:
    """The batch's options from the flags given (None: none given, keep the batch's)."""
    if not given:
        return None
    try:
        return TranscriptionOptions.model_validate(given)
    except ValidationError as error:
        problems = "; ".join(
            f"--{str(item['loc'][0]).replace('_', '-')}: {item['msg']}"
            if item["loc"]
            else item["msg"].removeprefix("Value error, ")  # about several flags together
            for item in error.errors()
        )
        raise UsageError(f"Invalid transcription options: {problems}") from None

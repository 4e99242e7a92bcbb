"""The vocabulary filter (issue 31): words that must not appear in stored transcripts are
masked, removed or tagged in the text and the words alike, timings kept."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from whisperq.redaction.vocabulary_filter import filter_segments
from whisperq.schemas import Segment, TranscriptionOptions, Word


def _segment(text: str, with_words: bool = True) -> Segment:
    pieces = text.split()
    words = [
        Word(start=i * 0.5, end=i * 0.5 + 0.4, word=f" {p}", probability=0.9)
        for i, p in enumerate(pieces)
    ]
    return Segment(
        start=0.0, end=len(pieces) * 0.5, text=f" {text}", avg_logprob=-0.2,
        no_speech_prob=0.1, words=words if with_words else None,
    )  # fmt: skip


ENTRIES = ["darn", "Acme Rival"]
SAID = "Darn, I switched to acme rival because darning is darn slow."


@pytest.mark.parametrize(
    ("mode", "text", "words"),
    [
        ("mask", "***, I switched to *** *** because darning is *** slow.", 11),
        ("remove", "I switched to because darning is slow.", 7),
        ("tag", "[FILTERED:Darn], I switched to [FILTERED:acme rival] because darning is "
                "[FILTERED:darn] slow.", 10),
    ],
)  # fmt: skip
def test_each_mode_in_text_and_words(mode, text, words):
    (segment,), hits = filter_segments([_segment(SAID)], ENTRIES, mode)
    assert hits == 3
    assert segment.text.strip() == text
    assert segment.words is not None and len(segment.words) == words
    said = " ".join(w.word.strip() for w in segment.words).lower()
    if mode != "tag":
        assert "darn " not in said + " " and "darn," not in said  # gone from the words too
    assert "darning" in said  # a longer word is not the filtered one
    switched = next(w for w in segment.words if w.word.strip() == "switched")
    assert (switched.start, switched.end) == (1.0, 1.4)  # timings kept


def test_a_segment_without_words_is_filtered_in_its_text():
    (segment,), hits = filter_segments([_segment(SAID, with_words=False)], ENTRIES, "mask")
    assert hits == 3 and "darn," not in segment.text.lower() and segment.words is None


def test_options_keep_no_filter_keys_without_a_filter_and_check_the_entries():
    assert "vocabulary_filter" not in TranscriptionOptions().model_dump(mode="json")
    assert "filter_mode" not in TranscriptionOptions().model_dump(mode="json")
    given = TranscriptionOptions(vocabulary_filter=["  Acme   Rival "], filter_mode="tag")
    assert given.model_dump(mode="json")["vocabulary_filter"] == ["Acme Rival"]
    with pytest.raises(ValueError, match="1-100 characters"):
        TranscriptionOptions(vocabulary_filter=["   "])


def test_submit_takes_a_filter_file(cli_env, tmp_path):
    from whisperq.cli import app

    from helpers import queued_jobs

    (tmp_path / "a.wav").write_bytes(b"a")
    words = tmp_path / "words.txt"
    words.write_text("# competitors\nAcme Rival\n\ndarn  # mild\n")
    result = CliRunner().invoke(
        app,
        ["submit", str(tmp_path / "a.wav"), "-b", "vf", "--vocabulary-filter", str(words),
         "--filter-mode", "remove"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (job,) = queued_jobs(cli_env)
    assert job.options.vocabulary_filter == ["Acme Rival", "darn"]
    assert job.options.filter_mode == "remove"


def test_a_worker_stores_no_filtered_word_in_any_rendering(aws, make_speech, tmp_path):
    import json

    from whisperq import keys, storage
    from whisperq.worker.runner import JobRunner

    from helpers import upload_job

    audio = make_speech(tmp_path / "call.wav", "Hello. This is a terrible service, truly.")
    options = TranscriptionOptions(vocabulary_filter=["service"], language="en")
    payload = upload_job(aws, audio, "vf", "call.wav", options)
    assert JobRunner(aws).run(payload) == "done"
    s3 = storage.client(aws, "s3")

    def stored(fmt: str) -> str:
        key = keys.result_key("vf", "call.wav", fmt)
        return s3.get_object(Bucket=aws.bucket, Key=key)["Body"].read().decode()

    result = json.loads(stored("json"))
    said = [result["text"], *(segment["text"] for segment in result["segments"])]
    for text in [*said, stored("srt"), stored("vtt"), stored("txt")]:
        # the word as a whole word, as the filter matches ("services" is another word)
        assert not re.search(r"\bservice\b", text, re.IGNORECASE), text
    assert "***" in stored("txt")  # what the model heard as "service" is masked
    assert result["options"]["vocabulary_filter"] == ["service"]

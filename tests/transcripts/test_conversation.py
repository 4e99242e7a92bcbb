"""Conversation metrics on constructed transcripts (exact numbers worked out by hand), the
batch summary and CSV, and `whisperq report` against moto."""

from __future__ import annotations

import csv
import io
import json

import pytest
from typer.testing import CliRunner

from whisperq import keys, storage
from whisperq.cli import app
from whisperq.schemas import Segment, Word
from whisperq.transcripts.conversation import (
    TOLERANCE_S,
    UTTERANCE_GAP_S,
    ConversationMetrics,
    batch_conversation,
    conversation_metrics,
    csv_rows,
)

from helpers import write_batch, write_result


def seg(start, end, text, speaker=None, words=None):
    return Segment(
        start=start, end=end, text=text, avg_logprob=-0.2, no_speech_prob=0.01,
        speaker=speaker, words=words,
    )  # fmt: skip


def said(speaker, *timed):
    """A segment of ``speaker`` from (start, end, word) triples, words labelled too."""
    words = [
        Word(start=s, end=e, word=f" {w}", probability=0.9, speaker=speaker) for s, e, w in timed
    ]
    text = "".join(word.word for word in words)
    return seg(timed[0][0], timed[-1][1], text, speaker, words)


def two_speaker_call():
    """16 s; agent (A) and customer (C), by word timings:

    - A1 1.0-3.0 (3 words); C1 2.9-5.0 (3 words) starts 0.1 s before A1 ends: within the
      tolerance, not an interruption;
    - A2 5.0-8.0 (3 words, a 0.2 s pause inside, one utterance) starts as C1 ends:
      back-to-back, not an interruption;
    - C2 6.0-7.0 (2 words) starts while A2 has 2 s left: an interruption by C;
    - silence 8.0-12.0 (the longest), A3 12.0-13.0, a 0.6 s pause (two utterances),
      A4 13.6-14.0; silence to the end (16.0); lead-in 0-1.0.
    """
    return [
        said("agent", (1.0, 1.5, "Hello"), (1.5, 2.0, "there"), (2.0, 3.0, "friend")),
        said("customer", (2.9, 3.5, "hi"), (3.5, 4.0, "my"), (4.0, 5.0, "bill")),
        said("agent", (5.0, 6.0, "okay"), (6.2, 7.0, "so"), (7.0, 8.0, "listen")),
        said("customer", (6.0, 6.5, "wait"), (6.5, 7.0, "stop")),
        said("agent", (12.0, 13.0, "bye"), (13.6, 14.0, "now")),
    ]


def by_speaker(metrics):
    return {entry.speaker: entry for entry in metrics.speakers}


def test_constants_are_the_documented_ones():
    assert UTTERANCE_GAP_S == 0.5 and TOLERANCE_S == 0.3


def test_two_speakers_by_word_timings():
    m = conversation_metrics(two_speaker_call(), 16.0)
    assert m.basis == "words" and m.duration == 16.0
    # anyone speaks: 1.0-8.0, 12.0-13.0, 13.6-14.0
    assert m.talk_time == 8.4 and m.non_talk_time == 7.6
    assert m.longest_silence is not None
    assert m.longest_silence.model_dump() == {"start": 8.0, "end": 12.0, "seconds": 4.0}
    assert m.overlap_time == 1.1  # 2.9-3.0 and 6.0-7.0
    assert m.turns == 5  # A C A C A (A3 and A4 are one turn)
    agent, customer = m.speakers  # order of first appearance
    assert agent.model_dump() == {
        "speaker": "agent",
        "talk_time": 6.4,  # 2.0 + 3.0 + 1.0 + 0.4
        "talk_share": 0.4,
        "words": 8,
        "words_per_minute": 75.0,  # 8 words in 6.4 s
        "interruptions": 0,
        "turns": 3,
    }
    assert customer.model_dump() == {
        "speaker": "customer",
        "talk_time": 3.1,  # 2.1 + 1.0
        "talk_share": 0.1938,
        "words": 5,
        "words_per_minute": 96.8,  # 5 words in 3.1 s
        "interruptions": 1,  # C2 only: C1 is within the tolerance
        "turns": 2,
    }
    # consistent: the speakers' talk, overlaps counted once, is the call's talk time
    assert m.talk_time <= m.duration
    assert agent.talk_time + customer.talk_time - m.overlap_time == pytest.approx(m.talk_time)
    assert m.talk_time + m.non_talk_time == pytest.approx(m.duration)
    # the metrics are what a result stores: they round-trip through JSON
    assert ConversationMetrics.model_validate_json(m.model_dump_json()) == m


def test_interruption_tolerance_and_simultaneous_starts():
    def interruptions(b_start):
        call = [seg(0.0, 10.0, "a long one", "a"), seg(b_start, 12.0, "b", "b")]
        return by_speaker(conversation_metrics(call, 12.0))["b"].interruptions

    assert interruptions(9.75) == 0  # A ends 0.25 s later: within the tolerance
    assert interruptions(9.6) == 1  # 0.4 s later: an interruption
    assert interruptions(10.0) == 0  # back-to-back
    # starting together: neither cut in
    together = conversation_metrics([seg(1, 5, "x", "a"), seg(1, 3, "y", "b")], 6)
    assert [s.interruptions for s in together.speakers] == [0, 0]
    assert together.turns == 2 and together.overlap_time == 2.0
    # one utterance start over two speakers still talking counts once
    three = [seg(0, 10, "x", "a"), seg(1, 10, "y", "b"), seg(5, 6, "z", "c")]
    assert by_speaker(conversation_metrics(three, 10))["c"].interruptions == 1


def test_segments_basis_when_any_segment_lacks_words():
    call = [
        said("agent", (0.5, 1.0, "one"), (1.0, 4.0, "two")),  # words ignored: basis segments
        seg(3.0, 6.0, " a b c", "customer"),
        seg(6.2, 9.0, " x y", "agent"),
    ]
    call[0] = call[0].model_copy(update={"text": " one two three four five six"})
    m = conversation_metrics(call, 10.0)
    assert m.basis == "segments"
    assert m.talk_time == 8.3 and m.non_talk_time == 1.7  # 0.5 lead-in, 0.2 gap, 1.0 tail
    assert m.longest_silence is not None
    assert (m.longest_silence.start, m.longest_silence.seconds) == (9.0, 1.0)
    assert m.overlap_time == 1.0 and m.turns == 3
    agent, customer = m.speakers
    assert (agent.talk_time, agent.words, agent.words_per_minute) == (6.3, 8, 76.2)
    assert (agent.interruptions, agent.turns) == (0, 2)
    assert (customer.talk_time, customer.words, customer.words_per_minute) == (3.0, 3, 60.0)
    assert (customer.interruptions, customer.turns) == (1, 1)
    assert customer.talk_share == 0.3


def test_a_file_without_speakers():
    # a 0.3 s pause is inside one utterance: talk, not silence
    call = [seg(1.0, 4.0, " a b c d e f"), seg(4.3, 6.0, " g h")]
    m = conversation_metrics(call, 8.0)
    assert m.basis == "segments" and m.talk_time == 5.0 and m.non_talk_time == 3.0
    assert m.longest_silence is not None
    assert (m.longest_silence.start, m.longest_silence.end) == (6.0, 8.0)  # the tail
    assert m.turns is None and m.overlap_time == 0.0
    assert [s.model_dump() for s in m.speakers] == [
        {
            "speaker": None,
            "talk_time": 5.0,
            "talk_share": 0.625,
            "words": 8,
            "words_per_minute": 96.0,
            "interruptions": None,
            "turns": None,
        }
    ]
    # a 0.6 s pause splits it: silence
    split = conversation_metrics([seg(1.0, 4.0, " a"), seg(4.6, 6.0, " b")], 8.0)
    assert split.talk_time == 4.4 and split.non_talk_time == 3.6


def test_an_empty_transcript_is_all_silence():
    m = conversation_metrics([], 30.0)
    assert (m.talk_time, m.non_talk_time, m.overlap_time, m.turns) == (0.0, 30.0, 0.0, None)
    assert m.longest_silence is not None
    assert m.longest_silence.model_dump() == {"start": 0.0, "end": 30.0, "seconds": 30.0}
    (only,) = m.speakers
    assert (only.speaker, only.talk_time, only.talk_share, only.words) == (None, 0.0, 0.0, 0)
    assert only.words_per_minute is None
    # a split call's channel labels are known even when nobody spoke
    labelled = conversation_metrics([], 30.0, speakers=["agent", "customer"])
    assert labelled.turns == 0
    assert [(s.speaker, s.talk_time, s.interruptions, s.turns) for s in labelled.speakers] == [
        ("agent", 0.0, 0, 0),
        ("customer", 0.0, 0, 0),
    ]
    zero = conversation_metrics([], 0.0)
    assert zero.longest_silence is None and zero.speakers[0].talk_share == 0.0


def test_times_are_clamped_to_the_duration_and_silent_speakers_listed():
    # a segment running past the end (Whisper does) and one of a speaker the words carry
    call = [
        seg(-1.0, 2.0, " early", "agent"),
        seg(8.0, 12.0, " late one", "agent"),
    ]
    m = conversation_metrics(call, 10.0, speakers=["agent", "customer"])
    assert m.talk_time == 4.0 and m.non_talk_time == 6.0
    assert m.longest_silence is not None and m.longest_silence.start == 2.0
    agent, customer = m.speakers
    assert agent.talk_time == 4.0 and agent.words_per_minute == 45.0
    assert (customer.speaker, customer.talk_time, customer.words_per_minute) == (
        "customer",
        0.0,
        None,
    )
    # a word without a label takes its segment's
    words = [Word(start=0.0, end=1.0, word=" hi", probability=0.9)]
    assert conversation_metrics([seg(0, 1, " hi", "agent", words)], 2).speakers[0].speaker == (
        "agent"
    )


def small_batch():
    """Two calls with different speakers: the words call (agent, customer) and a segments
    call (customer first, then supervisor, who cuts in twice)."""
    second = [
        seg(0.0, 4.0, " one two three four", "customer"),
        seg(2.0, 3.0, " no", "supervisor"),
        seg(3.5, 5.0, " stop now", "supervisor"),
    ]
    return [
        ("a.wav", conversation_metrics(two_speaker_call(), 16.0)),
        ("b.wav", conversation_metrics(second, 6.0)),
    ]


def test_the_second_call_of_the_batch():
    _, m = small_batch()[1]
    # the supervisor's two segments are 0.5 s apart (not under UTTERANCE_GAP_S): two
    # utterances, both cutting in, but one turn (nobody else started in between)
    supervisor = by_speaker(m)["supervisor"]
    assert (supervisor.talk_time, supervisor.interruptions, supervisor.turns) == (2.5, 2, 1)
    assert m.turns == 2 and m.talk_time == 5.0 and m.overlap_time == 1.5
    assert m.longest_silence is not None
    assert (m.longest_silence.start, m.longest_silence.seconds) == (5.0, 1.0)


def test_csv_columns_and_rows():
    rows = csv_rows(small_batch())
    fixed = [
        "path", "duration_s", "basis", "talk_time_s", "non_talk_time_s", "overlap_time_s",
        "longest_silence_s", "longest_silence_start_s", "turns", "interruptions",
    ]  # fmt: skip
    per = ["talk_s", "share", "wpm", "interruptions"]
    labels = ["agent", "customer", "supervisor"]  # first appearance across the batch
    assert rows[0] == fixed + [f"{label}_{name}" for label in labels for name in per]
    assert rows[1] == [
        "a.wav", 16.0, "words", 8.4, 7.6, 1.1, 4.0, 8.0, 5, 1,
        6.4, 0.4, 75.0, 0,
        3.1, 0.1938, 96.8, 1,
        None, None, None, None,
    ]  # fmt: skip
    assert rows[2] == [
        "b.wav", 6.0, "segments", 5.0, 1.0, 1.5, 1.0, 5.0, 2, 2,
        None, None, None, None,
        4.0, 0.6667, 60.0, 0,
        2.5, 0.4167, 72.0, 2,
    ]  # fmt: skip
    # speech without labels gets the unlabelled columns; its interruptions are empty
    mono = ("c.wav", conversation_metrics([seg(0, 3, " a b c")], 4.0))
    rows = csv_rows([mono])
    assert rows[0][-4:] == ["unlabelled_talk_s", "unlabelled_share", "unlabelled_wpm",
                            "unlabelled_interruptions"]  # fmt: skip
    assert rows[1] == ["c.wav", 4.0, "segments", 3.0, 1.0, 0.0, 1.0, 3.0, None, None,
                       3.0, 0.75, 60.0, None]  # fmt: skip


def test_batch_totals_and_top_lists():
    summary = batch_conversation(small_batch(), top=1)
    assert summary.calls == 2 and summary.audio_seconds == 22.0
    assert (summary.talk_time, summary.non_talk_time, summary.overlap_time) == (13.4, 8.6, 2.6)
    assert summary.interruptions == 3
    totals = {s.speaker: s for s in summary.speakers}
    assert list(totals) == ["agent", "customer", "supervisor"]
    assert (totals["customer"].calls, totals["customer"].talk_time) == (2, 7.1)
    assert totals["customer"].words == 9 and totals["customer"].interruptions == 1
    assert totals["customer"].words_per_minute == round(9 / (7.1 / 60), 1)
    assert [(c.path, c.seconds, c.start) for c in summary.longest_silences] == [("a.wav", 4.0, 8.0)]
    assert [(c.path, c.interruptions) for c in summary.most_interruptions] == [("b.wav", 2)]
    assert summary.most_interruptions[0].by_speaker == {"customer": 0, "supervisor": 2}
    everything = batch_conversation(small_batch())
    assert [c.path for c in everything.longest_silences] == ["a.wav", "b.wav"]
    assert [c.path for c in everything.most_interruptions] == ["b.wav", "a.wav"]


# --- whisperq report, against moto ------------------------------------------------------


runner = CliRunner()


def put_result(settings, batch, path, duration, segments, **extra):
    write_result(settings, batch, path, duration=duration, segments=segments, extra=extra)


@pytest.fixture
def reported_batch(cli_env):
    """Three files: a.wav written before metrics (computed from its segments), b.wav with
    stored metrics (used as stored: its segments are left empty), c.wav pending."""
    write_batch(cli_env, "calls", ["a.wav", "b.wav", "c.wav"])
    put_result(cli_env, "calls", "a.wav", 16.0, two_speaker_call())
    stored = small_batch()[1][1].model_dump(mode="json")
    put_result(cli_env, "calls", "b.wav", 6.0, [], metrics=stored)
    return "calls"


def test_report_json_csv_and_table(reported_batch):
    result = runner.invoke(app, ["report", reported_batch, "--json", "--top", "1"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data == {
        "batch": "calls",
        "unreadable_results": 0,
        **batch_conversation(small_batch(), top=1).model_dump(mode="json"),
    }

    result = runner.invoke(app, ["report", reported_batch, "--csv"])
    assert result.exit_code == 0, result.output
    parsed = list(csv.reader(io.StringIO(result.stdout)))
    expected = [["" if v is None else str(v) for v in row] for row in csv_rows(small_batch())]
    assert parsed == expected

    result = runner.invoke(app, ["report", reported_batch], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "conversation metrics of calls (2 call(s))" in text
    assert "talk: supervisor (1 call(s))" in text and "longest silences" in text
    assert "most interruptions" in text and "supervisor 2" in text and "customer 0" not in text
    assert "2 of 3 file(s) finished" in text


def test_report_errors_say_what_to_do(cli_env):
    result = runner.invoke(app, ["report", "nope"])
    assert result.exit_code == 1 and "No batch named 'nope'" in result.output

    write_batch(cli_env, "fresh", ["a.wav", "b.wav"])
    result = runner.invoke(app, ["report", "fresh"])
    assert result.exit_code == 1
    assert "no finished results yet (2 file(s) submitted)" in result.output
    assert "whisperq wait fresh" in result.output

    result = runner.invoke(app, ["report", "fresh", "--csv", "--json"])
    assert result.exit_code == 2 and "do not go together" in result.output


def test_report_skips_unreadable_results(cli_env):
    write_batch(cli_env, "odd", ["a.wav", "b.wav"])
    put_result(cli_env, "odd", "a.wav", 8.0, [seg(1.0, 4.0, " a b c")])
    s3 = storage.client(cli_env, "s3")
    storage.put_text(
        s3, cli_env.bucket, keys.result_key("odd", "b.wav", "json"), '{"x": 1}', "text/plain"
    )
    result = runner.invoke(app, ["report", "odd", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["unreadable_results"] == 1 and data["calls"] == 1 and data["talk_time"] == 3.0

"""Who spoke when on mono audio: a two-voice dialogue, one voice, splitting, labels."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from whisperq.schemas import Segment, TranscriptionOptions, Word
from whisperq.speech import diarization, engine
from whisperq.speech.audio import stream_audio

# Two voices a listener tells apart at once (en-gb+m3 against en-us is too close to be a
# fair two-speaker call: the same synthesiser's male voice with another accent).
VOICES = ("en-us", "en-us+f3")
TURNS = [
    "Thank you for calling customer support, how can I help you today?",
    "My internet connection keeps dropping every evening around eight o'clock.",
    "I am sorry to hear that. Can I have your account number, please?",
    "Sure, it is four five six seven eight nine.",
    "Thank you. I can see two outages in your area this week.",
    "Please send the confirmation to my email address.",
]


def make_dialogue(tmp: Path, turns: list[str], voices: tuple[str, ...]) -> tuple[Path, list]:
    """A mono 16 kHz dialogue, turn ``i`` in ``voices[i % len(voices)]``, 0.3 s of silence
    around each turn; returns the file and each turn's (start, end, voice index)."""
    pieces, reference, clock = [], [], 0.0
    for index, text in enumerate(turns):
        raw, turn = tmp / f"{index}-raw.wav", tmp / f"{index}.wav"
        voice = voices[index % len(voices)]
        subprocess.run(["espeak-ng", "-v", voice, "-s", "160", "-w", str(raw), text], check=True)
        subprocess.run(
            ["sox", raw, "-r", "16000", "-c", "1", "-b", "16", turn, "pad", "0.3", "0.3"],
            check=True,
        )
        seconds = float(
            subprocess.run(["soxi", "-D", turn], capture_output=True, text=True, check=True).stdout
        )
        reference.append((clock + 0.3, clock + seconds - 0.3, index % len(voices)))
        clock += seconds
        pieces.append(str(turn))
    path = tmp / "dialogue.wav"
    subprocess.run(["sox", *pieces, str(path)], check=True)
    return path, reference


def transcribe(path: Path) -> tuple[np.ndarray, list[Segment]]:
    config = engine.EngineConfig()
    loaded = engine.load_model(config)
    options = TranscriptionOptions(word_timestamps=True)
    transcript = engine.transcribe_file(loaded, path, options, config)
    audio = np.concatenate([w.samples for w in stream_audio(path)])
    return audio, transcript.segments


@pytest.fixture(scope="module")
def dialogue(tmp_path_factory) -> tuple[np.ndarray, list[Segment], list]:
    path, reference = make_dialogue(tmp_path_factory.mktemp("dialogue"), TURNS, VOICES)
    audio, segments = transcribe(path)
    return audio, segments, reference


@pytest.fixture(scope="module")
def diarized(dialogue) -> list[Segment]:
    audio, segments, _ = dialogue
    return diarization.diarize(audio, segments)


def speaker_during(segments: list[Segment], start: float, end: float) -> str | None:
    """The speaker of the words said most within [start, end] (by time overlap)."""
    talk: dict[str, float] = {}
    for segment in segments:
        for word in segment.words or []:
            overlap = min(word.end, end) - max(word.start, start)
            if overlap > 0 and word.speaker:
                talk[word.speaker] = talk.get(word.speaker, 0.0) + overlap
    return max(talk, key=talk.__getitem__) if talk else None


def test_a_two_voice_dialogue_alternates_with_the_right_speaker(dialogue, diarized):
    _, _, reference = dialogue
    result = diarized

    said = [speaker_during(result, start, end) for start, end, _ in reference]
    expected = [f"speaker_{voice + 1}" for _, _, voice in reference]
    right = sum(s == e for s, e in zip(said, expected, strict=True))
    assert right / len(reference) >= 0.9, (said, expected)
    assert {s.speaker for s in result} == {"speaker_1", "speaker_2"}
    for segment in result:  # cut at every change: one speaker per segment, words included
        assert {w.speaker for w in segment.words or []} <= {segment.speaker}


def test_a_whisper_segment_across_a_turn_change_is_cut_there(dialogue):
    audio, segments, reference = dialogue
    words = [w for s in segments for w in s.words or []]
    change = reference[1][0]  # the second voice's first turn
    across = [w for w in words if reference[0][0] - 0.1 < w.start < reference[1][1]]
    merged = Segment(
        start=across[0].start,
        end=across[-1].end,
        text=" ".join(w.word.strip() for w in across),
        avg_logprob=-0.2,
        no_speech_prob=0.01,
        words=across,
    )
    # the first two turns only: the test stays quick
    result = diarization.diarize(audio[: int((reference[1][1] + 0.3) * 16_000)], [merged])

    first, second = result[0], result[1]
    assert first.speaker == "speaker_1" and second.speaker == "speaker_2"
    assert abs(first.end - change) < 1.0 and abs(second.start - change) < 1.0
    assert f"{first.text} {second.text}" == merged.text[: len(first.text) + len(second.text) + 1]


def test_one_voice_is_one_speaker(tmp_path):
    path, _ = make_dialogue(tmp_path, TURNS[:4], VOICES[:1])
    audio, segments = transcribe(path)
    result = diarization.diarize(audio, segments)

    assert {s.speaker for s in result} == {"speaker_1"}
    assert len(result) == len(segments)


def segment(start: float, end: float, words: list[Word] | None = None) -> Segment:
    return Segment(
        start=start, end=end, text=" x", avg_logprob=-0.1, no_speech_prob=0.0, words=words
    )


def test_nothing_said_and_tiny_audio_do_not_fail():
    assert diarization.diarize(np.zeros(16_000, np.float32), []) == []
    short = diarization.diarize(np.zeros(800, np.float32), [segment(0.0, 0.05)])
    assert [s.speaker for s in short] == ["speaker_1"]
    empty = diarization.diarize(np.zeros(0, np.float32), [segment(0.0, 1.0)])
    assert [s.speaker for s in empty] == ["speaker_1"]


def test_names_follow_the_order_of_first_appearance():
    words = [Word(start=0.0, end=0.5, word=" hi", probability=1.0, speaker="speaker_2")]
    segments = [
        segment(0.0, 1.0).model_copy(update={"speaker": "speaker_1"}),
        segment(1.0, 2.0, words).model_copy(update={"speaker": "speaker_2"}),
        segment(2.0, 3.0).model_copy(update={"speaker": "speaker_3"}),
    ]
    renamed = diarization.rename(segments, ["agent", "customer"])

    assert [s.speaker for s in renamed] == ["agent", "customer", "speaker_3"]
    assert renamed[1].words is not None and renamed[1].words[0].speaker == "customer"


# --- which speaker is the agent: cues in their words ----------------------------------------


def test_the_agent_is_named_by_cues_even_when_the_customer_speaks_first():
    decided = diarization.decide_names(
        [
            ("speaker_1", "Hello, yes, I got a missed call from this number."),
            ("speaker_2", "Thank you for calling Acme, how can I help?"),
            ("speaker_1", "The package never arrived."),
        ],
        ["agent", "customer"],
    )

    assert decided["speaker_2"] == ("agent", "cue: 'thank you for calling', 'how can I help'")
    assert decided["speaker_1"][0] == "customer"
    assert decided["speaker_1"][1].startswith("order of appearance")


def test_cues_that_agree_with_the_order_keep_it():
    decided = diarization.decide_names(
        [
            ("speaker_1", "Good morning, my name is Dana from Acme billing."),
            ("speaker_2", "Hi, I'm calling about my bill."),
            ("speaker_1", "Is there anything else I can do for you?"),
        ],
        ["agent", "customer"],
    )

    assert decided["speaker_1"] == ("agent", "cue: 'my name is ... from', 'is there anything else'")
    assert decided["speaker_2"][0] == "customer"


def test_no_cue_or_a_tie_falls_back_to_the_order_of_appearance():
    plain = [("speaker_1", "Hello."), ("speaker_2", "Hi there."), ("speaker_1", "Okay.")]
    both = [  # the same cue on both sides: nothing decides
        ("speaker_1", "How can I help?"),
        ("speaker_2", "How can I help you, you ask?"),
    ]
    for utterances in (plain, both):
        decided = diarization.decide_names(utterances, ["agent", "customer"])
        assert decided == {
            "speaker_1": ("agent", "order of appearance"),
            "speaker_2": ("customer", "order of appearance"),
        }


def test_customer_cues_and_hotwords_count():
    hotwords = "Acme, Zorbex router"
    greeting = [
        ("speaker_1", "Yes hello?"),
        ("speaker_2", "Hi, it's Sam at Acme returning your call."),
    ]
    decided = diarization.decide_names(greeting, ["agent", "customer"], hotwords)
    assert decided["speaker_2"] == ("agent", "cue: 'greeting with acme'")
    assert diarization.decide_names(greeting, ["agent", "customer"])["speaker_1"][0] == "agent"

    customer = [("speaker_1", "Hello."), ("speaker_2", "I'm calling about my account.")]
    decided = diarization.decide_names(customer, ["agent", "customer"])
    name, how = decided["speaker_1"]  # the other one sounds like a customer
    assert name == "agent" and how.startswith('cue: "I\'m calling about" from the other side')
    score, found = diarization.agent_cues("I\u2019m calling about my Zorbex router", hotwords)
    assert score < 0 and "customer: I'm calling about" in found


def test_the_agent_name_may_come_second_and_extra_speakers_keep_their_labels():
    decided = diarization.decide_names(
        [("speaker_1", "Um, hi."), ("speaker_2", "Welcome to Acme."), ("speaker_3", "Hey.")],
        ["customer", "agent"],
    )

    assert decided["speaker_2"][0] == "agent"
    assert decided["speaker_1"][0] == "customer"
    assert decided["speaker_3"] == ("speaker_3", "no name left")


def test_name_speakers_renames_words_and_says_how():
    words = [Word(start=1.0, end=1.5, word=" Thank", probability=1.0, speaker="speaker_2")]
    segments = [
        segment(0.0, 1.0).model_copy(update={"speaker": "speaker_1", "text": " Hello?"}),
        segment(1.0, 2.0, words).model_copy(
            update={"speaker": "speaker_2", "text": " Thank you for calling."}
        ),
    ]
    named, labels = diarization.name_speakers(segments, ["agent", "customer"])

    assert [s.speaker for s in named] == ["customer", "agent"]
    assert named[1].words is not None and named[1].words[0].speaker == "agent"
    assert [(label.found, label.speaker) for label in labels] == [
        ("speaker_1", "customer"),
        ("speaker_2", "agent"),
    ]
    assert labels[1].decided_by == "cue: 'thank you for calling'"
    assert diarization.rename(segments, ["agent", "customer"]) == named


def test_a_call_the_customer_starts_names_the_agent_through_the_engine(tmp_path):
    turns = [
        "Hello, yes, I got a missed call from this number.",
        "Thank you for calling Acme, how can I help?",
        "The package never arrived last week.",
        "Let me check that for you right now.",
    ]
    path, reference = make_dialogue(tmp_path, turns, ("en-us+f3", "en-us"))
    options = TranscriptionOptions(diarize=True, speakers=("agent", "customer"))
    config = engine.EngineConfig()
    transcript = engine.transcribe_file(engine.load_model(config), path, options, config)

    said = [speaker_during(transcript.segments, start, end) for start, end, _ in reference]
    assert said == ["customer", "agent", "customer", "agent"]


def test_the_benchmark_scores_der_as_md_eval_does(monkeypatch):
    import importlib.util
    import sys

    path = Path(__file__).parents[2] / "benchmarks" / "diarization.py"
    spec = importlib.util.spec_from_file_location("diarization_benchmark", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)  # its dataclass looks itself up
    monkeypatch.setattr(sys, "path", list(sys.path))  # it adds benchmarks/ for calls.py
    spec.loader.exec_module(bench)
    reference = [(0.0, 4.0, "A"), (4.0, 8.0, "B"), (8.0, 10.0, "A")]

    def der(hypothesis, collar=0.0):
        error = bench.der(reference, hypothesis, 10.0, collar=collar)
        return [round(error[k], 3) for k in ("der", "missed", "false_alarm", "confusion")]

    relabelled = [(a, b, {"A": "x", "B": "y"}[who]) for a, b, who in reference]
    assert der(relabelled) == [0.0, 0.0, 0.0, 0.0]  # labels matched, not compared
    assert der([(0.0, 10.0, "x")]) == [0.4, 0.0, 0.0, 0.4]  # B's 4 s of 10 confused
    assert der([(0.0, 4.0, "x"), (8.0, 10.0, "x")]) == [0.4, 0.4, 0.0, 0.0]  # B missed
    assert der([*relabelled, (4.0, 6.0, "x")]) == [0.2, 0.0, 0.2, 0.0]  # 2 s too many
    # within 0.25 s of a reference boundary nothing is scored: a late change costs nothing
    late = [(0.0, 4.2, "x"), (4.2, 8.0, "y"), (8.0, 10.0, "x")]
    assert der(late, collar=0.25)[0] == 0.0 and der(late)[0] > 0.0

    words = [Word(start=t, end=t + 0.3, word=" w", probability=1.0, speaker="x") for t in (1, 5, 9)]
    one = [segment(0.0, 10.0, words)]
    assert bench.words_right(one, reference) == (2, 3)  # the best match: x is A


def test_the_count_is_estimated_unless_given():
    rng = np.random.default_rng(3)
    voices = np.abs(rng.normal(size=(2, 256)))
    prints = np.concatenate([v + rng.normal(scale=0.3, size=(40, 256)) for v in voices])
    prints = prints / np.linalg.norm(prints, axis=1, keepdims=True)

    assert len(diarization.cluster(prints, None, max_speakers=6)) == 2
    assert len(diarization.cluster(prints, 1, max_speakers=6)) == 1
    assert len(diarization.cluster(prints[:40], None, max_speakers=6)) == 1
    assert len(diarization.cluster(prints, 3, max_speakers=6)) == 3


# --- the option, end to end through the worker ----------------------------------------------


def test_diarize_options_are_checked():
    assert TranscriptionOptions(diarize=True).channels == "mix"  # auto: one mixed voice
    with pytest.raises(ValueError, match="use channels mix"):
        TranscriptionOptions(diarize=True, channels="split")
    with pytest.raises(ValueError, match="num_speakers needs diarize"):
        TranscriptionOptions(num_speakers=2)


def test_a_diarized_job_labels_every_format_with_the_names_given(aws, tmp_path):
    from whisperq import storage
    from whisperq.schemas import TranscriptResult
    from whisperq.worker.runner import JobRunner

    from helpers import upload_job

    path, _ = make_dialogue(tmp_path, TURNS[:4], VOICES)
    options = TranscriptionOptions(diarize=True, speakers=("agent", "customer"))
    assert JobRunner(aws).run(upload_job(aws, path, "dia", "call.wav", options)) == "done"

    s3 = storage.client(aws, "s3")

    def read(fmt: str) -> str:
        key = f"results/dia/call.wav.{fmt}"
        return s3.get_object(Bucket=aws.bucket, Key=key)["Body"].read().decode()

    result = TranscriptResult.model_validate_json(read("json"))
    order = [s.speaker for s in result.segments]
    turns = [who for i, who in enumerate(order) if i == 0 or order[i - 1] != who]
    assert turns == ["agent", "customer", "agent", "customer"]
    assert all(s.words is None for s in result.segments)  # made for diarization, not asked
    assert read("txt").startswith("agent: ") and "\ncustomer: " in read("txt")
    assert "[customer]" in read("srt") and "<v agent>" in read("vtt")
    assert {entry.speaker for entry in result.metrics.speakers} == {"agent", "customer"}
    assert result.speaker_labels is not None
    how = {label.speaker: label.decided_by for label in result.speaker_labels}
    assert how["agent"].startswith("cue: 'thank you for calling', 'how can I help'"), how

"""Short files sharing Whisper's windows: placing them (pure), splitting a shared window's
transcript back into each file's own time (pure), the engine decoding packed audio with
tiny.en, and workers taking short jobs from the queue against moto."""

import threading

import numpy as np
import pytest

from whisperq import storage
from whisperq.errors import WorkerUnfit
from whisperq.messages import encode_job_message
from whisperq.schemas import TranscriptionJob, TranscriptionOptions, TranscriptResult
from whisperq.speech import engine, packing
from whisperq.speech.audio import short_audio
from whisperq.worker import packs as short_jobs
from whisperq.worker.heartbeat import MessageHandle
from whisperq.worker.runner import JobRunner

from helpers import WINDOW, result_keys, segment, upload_job, word, words

RATE = packing.SAMPLE_RATE


def seconds(value: float) -> int:
    return round(value * RATE)


# --- placing files -----------------------------------------------------------------------


def test_files_are_placed_first_fit_with_a_gap_at_exact_sample_positions():
    lengths = [seconds(10), seconds(12), seconds(5), 12345, seconds(20)]
    windows = packing.plan(lengths, window=29.0, gap=1.0)
    assert [[p.index for p in w] for w in windows] == [[0, 1, 2], [3, 4]]
    first = windows[0]
    assert [(p.start, p.end) for p in first] == [(0.0, 10.0), (11.0, 23.0), (24.0, 29.0)]
    assert windows[1][0].end == 12345 / RATE  # exact, not rounded to milliseconds
    assert windows[1][1].start == (12345 + RATE) / RATE


def test_a_file_too_long_to_share_gets_a_window_of_its_own():
    windows = packing.plan([seconds(3), seconds(40), seconds(3)])
    assert [[p.index for p in w] for w in windows] == [[0, 2], [1]]


def test_packed_audio_holds_each_file_at_its_place_and_silence_between():
    audios = [np.full(seconds(1), 0.1, np.float32), np.full(seconds(2), -0.2, np.float32)]
    (window,) = packing.plan([len(a) for a in audios], gap=0.5)
    packed = packing.pack(audios, window)
    assert len(packed) == seconds(3.5)
    assert np.all(packed[: seconds(1)] == np.float32(0.1))
    assert np.all(packed[seconds(1) : seconds(1.5)] == 0)
    assert np.all(packed[seconds(1.5) :] == np.float32(-0.2))


# --- splitting a shared window's transcript -------------------------------------------------


def sounding(*spans: tuple[float, float]) -> np.ndarray:
    """The packed window's audio: sound in ``spans`` (where words were really said)."""
    audio = np.zeros(seconds(9.0), np.float32)
    for start, end in spans:
        audio[seconds(start) : seconds(end)] = 0.3
    return audio


def test_words_come_back_in_their_own_files_time_exactly():
    split = packing.split(
        [
            segment(word("hello", 0.2, 0.6), word("there", 0.6, 1.1)),
            segment(word("card", 3.9, 4.3), word("lost", 4.4, 5.25)),
            segment(word("yes", 7.5, 7.9)),
        ],
        WINDOW,
        sounding((0.2, 1.1), (3.9, 5.25), (7.5, 7.9)),
    )
    assert [(w.word, w.start, w.end) for s in split[0] for w in s.words] == [
        ("hello", 0.2, 0.6),
        ("there", 0.6, 1.1),
    ]
    assert [(w.word, w.start, w.end) for s in split[1] for w in s.words] == [
        ("card", 0.4, 0.8),
        ("lost", 0.9, 1.75),
    ]
    assert [(s.text, s.start, s.end) for s in split[2]] == [("yes", 0.5, 0.9)]


def test_a_segment_all_in_one_file_keeps_whispers_own_text():
    whole = segment(word("cold", 0.2, 0.5), word("-hearted", 0.5, 0.9)).model_copy(
        update={"text": "cold-hearted"}
    )
    (kept,) = packing.split([whole], WINDOW, sounding((0.2, 0.9)))[0]
    assert kept.text == "cold-hearted"


def test_a_segment_running_across_two_files_is_cut_between_them():
    (across,) = [segment(word("my", 1.8, 2.0), word("card", 2.0, 2.4), word("no", 4.0, 4.3))]
    split = packing.split([across], WINDOW, sounding((1.8, 2.4), (4.0, 4.3)))
    assert [s.text for s in split[0]] == ["my card"]
    assert [s.text for s in split[1]] == ["no"]
    assert split[2] == []
    assert (split[1][0].start, split[1][0].end) == (0.5, 0.8)
    assert split[1][0].avg_logprob == across.avg_logprob


@pytest.mark.parametrize(
    ("stretched", "said", "owner"),
    [
        # a file's first word, begun early by the alignment, in the silence before it
        (word("six", 2.0, 4.1), (3.6, 4.1), 1),
        # a file's last word, ended late, across the gap into the next file
        (word("them", 2.2, 4.0), (2.2, 2.5), 0),
    ],
)
def test_a_word_stretched_across_a_gap_stays_where_it_was_said(stretched, said, owner):
    split = packing.split([segment(stretched)], WINDOW, sounding(said))
    (mine,) = split[WINDOW[owner].index]
    assert mine.text == stretched.word
    assert all(not split[p.index] for p in WINDOW if p.index != owner)
    (kept,) = mine.words  # clamped into the file that has it: inside its own length
    assert 0.0 <= kept.start <= kept.end <= WINDOW[owner].duration


def test_a_word_ending_in_a_gap_goes_to_the_nearest_file_and_order_is_kept():
    split = packing.split(
        [segment(word("ok", 6.1, 6.2)), segment(word("hi", 6.6, 6.9))], WINDOW, sounding()
    )
    assert [s.text for s in split[1]] == ["ok"] and [s.text for s in split[2]] == ["hi"]
    assert split[1][0].end == 2.5 and split[2][0].start == 0.0
    # a word that the timings would send back to an earlier file stays with the later one
    back = packing.split(
        [segment(word("a", 4.0, 4.2)), segment(word("b", 1.0, 1.2))], WINDOW, sounding()
    )
    assert [s.text for s in back[1]] == ["a", "b"] and back[0] == []


def test_a_word_running_over_several_files_marks_them_for_decoding_alone():
    lost = segment(word("curtain", 1.0, 1.4), word("the", 2.2, 8.0))
    assert packing.lost([lost], WINDOW) == {0, 1, 2}
    stretched = segment(word("them", 2.2, 4.0))  # 1.8 s: an ordinary stretch, no doubt
    assert packing.lost([stretched], WINDOW) == set()


def test_silence_left_out_before_a_file_is_added_back_to_its_times():
    audio = np.zeros(seconds(5), np.float32)
    audio[seconds(1.5) : seconds(3.0)] = 0.5  # someone speaks from 1.5 s to 3.0 s
    first, end = packing.speech_bounds(audio, pad=0.25)
    assert (first, end) == (seconds(1.25), seconds(3.25))
    (window,) = packing.plan([len(audio)], speech=[(first, end)])
    (placed,) = window
    assert (placed.start, placed.end, placed.offset, placed.duration) == (0.0, 2.0, 1.25, 5.0)
    packed = packing.pack([audio], window)
    assert len(packed) == seconds(2.0) and np.all(packed[seconds(0.25) : seconds(1.75)] == 0.5)
    split = packing.split([segment(word("hello", 0.3, 0.9))], window, packed)
    ((said,),) = [s.words for s in split[0]]
    assert (said.start, said.end) == (1.55, 2.15)  # in the file's own time
    assert packing.speech_bounds(np.zeros(100, np.float32)) == (0, 100)  # silence: all of it


def test_segments_without_words_cannot_be_split():
    bare = segment(word("x", 0.1, 0.2)).model_copy(update={"words": None})
    with pytest.raises(ValueError, match="word timings"):
        packing.split([bare], WINDOW, sounding())


# --- the engine on packed audio (tiny.en) ------------------------------------------------

SHORT_CALLS = {
    "a.wav": ("I would like to pay my electricity bill.", {"pay", "electricity", "bill"}),
    "b.wav": ("Please call me back tomorrow morning.", {"call", "tomorrow", "morning"}),
    "c.wav": ("My flight to Chicago was delayed.", {"flight", "chicago", "delayed"}),
}


MORE_CALLS = [
    (
        "Hello, my internet connection keeps dropping every evening.",
        {"internet", "connection", "evening"},
    ),
    ("I was charged two times this month and I would like a refund.", {"2", "month", "refund"}),
]


@pytest.fixture(scope="module")
def tiny():
    config = engine.EngineConfig(model="tiny.en")
    return engine.load_model(config), config


def own_words(expected: dict[str, tuple[str, set[str]]], name: str) -> set[str]:
    return set().union(*(keywords for other, (_, keywords) in expected.items() if other != name))


def test_packed_files_get_their_own_words_in_their_own_time(tiny, make_speech, tmp_path):
    loaded, config = tiny
    options = TranscriptionOptions(word_timestamps=True)
    paths = {name: make_speech(tmp_path / name, text) for name, (text, _) in SHORT_CALLS.items()}
    audios = [short_audio(path, options) for path in paths.values()]
    assert all(audio is not None for audio in audios)

    packed = engine.transcribe_packed(loaded, audios, options, config)
    assert sum(t.options["packed_with"] == 2 for t in packed) >= 2  # they did share

    for (name, (_, keywords)), transcript, audio in zip(
        SHORT_CALLS.items(), packed, audios, strict=True
    ):
        heard = words(transcript.text)
        assert len(keywords & heard) >= 2, (name, transcript.text)
        assert not heard & own_words(SHORT_CALLS, name), (name, transcript.text)  # no crossing
        assert transcript.duration == round(len(audio) / RATE, 3)
        if transcript.options["packed_with"] == 0:
            continue  # its share was in doubt (tiny.en can be unsure): decoded alone
        assert transcript.options["packed_with"] == 2
        every = [w for s in transcript.segments for w in s.words]
        assert every and all(0 <= w.start <= w.end <= transcript.duration for w in every)
        # espeak's speech starts after 0.5 s of padding and ends 0.5 s before the file
        # does: the words are where the speech is, in the file's time, not the window's
        loud = np.flatnonzero(np.abs(audio) > 0.02) / RATE
        assert abs(every[0].start - loud[0]) < 0.45, (name, every[0], loud[0])
        assert loud[-1] - 0.8 < every[-1].end < loud[-1] + 0.45, (name, every[-1], loud[-1])


def test_silence_packed_with_speech_stays_empty_and_takes_no_words(tiny, make_speech, tmp_path):
    loaded, config = tiny
    options = TranscriptionOptions()
    speech = short_audio(make_speech(tmp_path / "s.wav", SHORT_CALLS["a.wav"][0]), options)
    silence = np.zeros(seconds(4), np.float32)
    quiet, spoken = engine.transcribe_packed(loaded, [silence, speech], options, config)
    assert quiet.text == "" and quiet.segments == []
    assert {"electricity", "bill"} <= words(spoken.text)
    # words were made for splitting only: the result echoes what was asked (the worker
    # drops the words, as for redaction)
    assert spoken.options["word_timestamps"] is False


def test_only_files_that_can_share_a_window_are_short(make_speech, tmp_path):
    long = make_speech(tmp_path / "long.wav", "one two three four five six seven " * 12)
    assert short_audio(long, TranscriptionOptions()) is None  # over 29 s
    stereo = make_speech(tmp_path / "st.wav", "hello there", channels=2)  # the same both sides
    audio = short_audio(stereo, TranscriptionOptions())
    assert audio is not None and audio.ndim == 1


def test_what_may_be_packed(tiny):
    loaded, _ = tiny
    assert engine.packable(TranscriptionOptions(), loaded)  # English-only: language known
    for refused in (
        TranscriptionOptions(diarize=True),
        TranscriptionOptions(channels="split"),
        TranscriptionOptions(multilingual=True),
        TranscriptionOptions(language="ja"),  # words without spaces between them
    ):
        assert not engine.packable(refused, loaded)


# --- workers taking short jobs from the queue (moto, tiny.en) ------------------------------


def queue_job(settings, payload: dict) -> None:
    body = encode_job_message(payload, settings.queue_name)
    storage.client(settings, "sqs").send_message(QueueUrl=settings.queue_url, MessageBody=body)


def deliver_one(settings) -> tuple[dict, MessageHandle]:
    """One message as Celery would deliver it: the payload and its SQS handle."""
    from whisperq.messages import job_payload_of

    sqs = storage.client(settings, "sqs")
    (message,) = sqs.receive_message(QueueUrl=settings.queue_url, MaxNumberOfMessages=1)["Messages"]
    return job_payload_of(message["Body"]), MessageHandle(
        settings.queue_url, message["ReceiptHandle"], 1
    )


def queue_counts(settings) -> tuple[int, int]:
    attributes = storage.client(settings, "sqs").get_queue_attributes(
        QueueUrl=settings.queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )


def stored_result(settings, batch: str, path: str) -> TranscriptResult:
    s3 = storage.client(settings, "s3")
    key = f"results/{batch}/{path}.json"
    return TranscriptResult.model_validate(storage.get_json(s3, settings.bucket, key))


def test_a_short_job_takes_the_queued_short_ones_along(aws, make_speech, tmp_path):
    settings = aws.model_copy(update={"visibility_timeout": 60})
    for name, (text, _) in SHORT_CALLS.items():
        queue_job(settings, upload_job(settings, make_speech(tmp_path / name, text), "p", name))
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really a wav")
    queue_job(settings, upload_job(settings, broken, "p", "broken.wav"))
    bigger = make_speech(tmp_path / "big.wav", "This one is too big to be taken along.", rate=48000)
    queue_job(settings, upload_job(settings, bigger, "p", "big.wav"))  # over pack_max_bytes
    other_batch = make_speech(tmp_path / "d.wav", "Another customer's batch.")
    queue_job(settings, upload_job(settings, other_batch, "other", "d.wav"))
    settings = settings.model_copy(update={"pack_max_bytes": bigger.stat().st_size - 1})

    def wanted(payload: dict) -> bool:  # a lead of batch p that decodes and is short
        return payload["batch"] == "p" and payload["path"] in SHORT_CALLS

    delivered: list = []
    while not delivered or not wanted(delivered[0][0]):
        if delivered:  # not a lead this test wants: back on the queue, as Celery would
            sqs = storage.client(settings, "sqs")
            sqs.change_message_visibility(
                QueueUrl=settings.queue_url,
                ReceiptHandle=delivered[0][1].receipt_handle,
                VisibilityTimeout=0,
            )
        assert len(delivered) < 20
        delivered.insert(0, deliver_one(settings))
    lead, handle = delivered[0]

    assert JobRunner(settings).run(lead, handle) == "done"

    for name, (_, keywords) in SHORT_CALLS.items():
        result = stored_result(settings, "p", name)
        heard = words(result.text)
        assert len(keywords & heard) >= 2, (name, result.text)
        assert not heard & own_words(SHORT_CALLS, name), (name, result.text)
        assert result.options["packed_with"] in (2, 0)  # shared; 0: in doubt, redone alone
        assert 0 < result.segments[-1].end <= result.duration
    shared = [stored_result(settings, "p", name).options["packed_with"] for name in SHORT_CALLS]
    assert shared.count(2) >= 2  # the three were packed into one window
    assert result_keys(settings, "p") == sorted(
        [f"results/p/{name}.{ext}" for name in SHORT_CALLS for ext in ("json", "srt", "vtt", "txt")]
        + ["results/p/broken.wav.error.json"]  # fails alone, with its record
    )
    assert result_keys(settings, "other") == []
    # Left on the queue: the two that could not share, as fresh messages, and the lead's
    # own message (Celery's to acknowledge; still invisible). The others are deleted.
    assert queue_counts(settings) == (2, 1)
    sqs = storage.client(settings, "sqs")
    left = sqs.receive_message(
        QueueUrl=settings.queue_url, MaxNumberOfMessages=10, AttributeNames=["All"]
    )["Messages"]
    from whisperq.messages import job_payload_of

    assert sorted(
        (job_payload_of(m["Body"])["path"], m["Attributes"]["ApproximateReceiveCount"])
        for m in left
    ) == [("big.wav", "1"), ("d.wav", "1")]


def test_two_workers_packing_from_one_queue_do_every_job_once(aws, make_speech, tmp_path):
    settings = aws.model_copy(update={"visibility_timeout": 60})
    calls = [*SHORT_CALLS.values(), *MORE_CALLS]
    texts = [text for text, _ in calls]
    paths = [f"f{i}.wav" for i in range(len(texts))]
    for path, text in zip(paths, texts, strict=True):
        queue_job(settings, upload_job(settings, make_speech(tmp_path / path, text), "c", path))
    settings = settings.model_copy(update={"pack_max_files": 3})
    results_written: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work() -> None:
        try:
            run_jobs()
        except BaseException as error:  # a thread's failure fails the test
            errors.append(error)

    def run_jobs() -> None:
        runner = JobRunner(settings)

        def count(params, **_):
            if params["Key"].endswith(".json"):
                with lock:
                    results_written.append(params["Key"])

        runner.s3.meta.events.register("before-parameter-build.s3.PutObject", count)
        sqs = storage.client(settings, "sqs")
        for _ in range(len(texts)):  # bounded: at most one lead per job
            received = sqs.receive_message(QueueUrl=settings.queue_url, MaxNumberOfMessages=1)
            if not received.get("Messages"):
                return
            (message,) = received["Messages"]
            from whisperq.messages import job_payload_of

            handle = MessageHandle(settings.queue_url, message["ReceiptHandle"], 1)
            assert runner.run(job_payload_of(message["Body"]), handle) == "done"
            sqs.delete_message(QueueUrl=settings.queue_url, ReceiptHandle=handle.receipt_handle)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []

    assert sorted(results_written) == sorted(f"results/c/{p}.json" for p in paths)  # once each
    assert queue_counts(settings) == (0, 0)
    for path, (_, keywords) in zip(paths, calls, strict=True):
        heard = words(stored_result(settings, "c", path).text)
        assert len(heard & keywords) >= 2, (path, heard)
        others = set().union(*(other for _, other in calls if other is not keywords))
        assert not heard & others, (path, heard)


def test_jobs_that_cannot_share_are_handed_on_with_a_fresh_receive_count(
    aws, make_speech, tmp_path
):
    lead = TranscriptionJob.model_validate(
        upload_job(aws, make_speech(tmp_path / "l.wav", "lead"), "h", "l.wav")
    )
    queue_job(
        aws,
        upload_job(
            aws,
            make_speech(tmp_path / "x.wav", "other"),
            "h",
            "x.wav",
            TranscriptionOptions(language="en"),
        ),
    )
    storage.client(aws, "sqs").send_message(QueueUrl=aws.queue_url, MessageBody="not a job")
    sqs = storage.client(aws, "sqs")

    gathered = short_jobs.gather(sqs, aws.queue_url, lead, 5, 30, 10**9)

    assert gathered == []
    bodies = []
    for _ in range(10):  # bounded: both messages are visible again at once
        for message in sqs.receive_message(
            QueueUrl=aws.queue_url, MaxNumberOfMessages=10, AttributeNames=["All"]
        ).get("Messages", []):
            bodies.append((message["Body"], message["Attributes"]["ApproximateReceiveCount"]))
        if len(bodies) == 2:
            break
    counts = dict((body == "not a job", count) for body, count in bodies)
    assert counts == {True: "2", False: "1"}  # handed back (counted) / handed on (fresh)


def test_gathering_is_bounded_when_nothing_fits(aws, make_speech, tmp_path):
    lead = TranscriptionJob.model_validate(
        upload_job(aws, make_speech(tmp_path / "l.wav", "lead"), "mine", "l.wav")
    )
    other = upload_job(aws, make_speech(tmp_path / "o.wav", "other"), "theirs", "o.wav")
    for number in range(12):  # more than one receive could ever hold, none can share
        queue_job(
            aws, other | {"path": f"o{number}.wav", "input_key": f"inputs/theirs/o{number}.wav"}
        )
    sqs = storage.client(aws, "sqs")
    receives: list[int] = []
    sqs.meta.events.register("before-call.sqs.ReceiveMessage", lambda **_: receives.append(1))

    assert short_jobs.gather(sqs, aws.queue_url, lead, 7, 30, 10**9) == []

    assert len(receives) == 1  # once, not until the queue runs dry
    assert queue_counts(aws) == (12, 0)  # all handed on: visible, none lost


def test_a_redelivered_job_is_kept_whatever_it_is(aws, make_speech, tmp_path):
    lead = TranscriptionJob.model_validate(
        upload_job(aws, make_speech(tmp_path / "l.wav", "lead"), "mine", "l.wav")
    )
    queue_job(aws, upload_job(aws, make_speech(tmp_path / "o.wav", "other"), "theirs", "o.wav"))
    sqs = storage.client(aws, "sqs")
    _, first = deliver_one(aws)  # a worker had it once and gave it back
    sqs.change_message_visibility(
        QueueUrl=aws.queue_url, ReceiptHandle=first.receipt_handle, VisibilityTimeout=0
    )

    (kept,) = short_jobs.gather(sqs, aws.queue_url, lead, 7, 30, 10**9)

    # handing it on would reset the count that sends a failing job to the dead-letter queue
    assert kept.job.batch == "theirs" and kept.message.receive_count == 2
    assert not kept.first_delivery


def test_a_pack_that_cannot_finish_gives_every_gathered_job_back_at_once(
    aws, make_speech, tmp_path, monkeypatch
):
    settings = aws.model_copy(update={"visibility_timeout": 60})
    for name, (text, _) in SHORT_CALLS.items():
        queue_job(settings, upload_job(settings, make_speech(tmp_path / name, text), "g", name))
    lead, handle = deliver_one(settings)

    def unfit(*_, **__):
        raise engine.ModelError("the model went away")

    monkeypatch.setattr(engine, "transcribe_packed", unfit)
    with pytest.raises(WorkerUnfit):
        JobRunner(settings).run(lead, handle)

    assert result_keys(settings, "g") == []
    # the two gathered jobs are visible again now, not after the 60 s visibility timeout;
    # the lead's message is Celery's to give back (it rejects the job)
    assert queue_counts(settings) == (2, 1)

"""Job messages built without Celery are the ones Celery sends, and go ten per request."""

import base64
import json
from collections import Counter

from whisperq import messages, storage
from whisperq.celery_app import decode_job_message, make_celery


def _envelope(body: str) -> dict:
    return json.loads(base64.b64decode(body))


def _receive_all(settings, limit):
    sqs = storage.client(settings, "sqs")
    bodies = []
    for _ in range(limit):  # bounded
        reply = sqs.receive_message(QueueUrl=settings.queue_url, MaxNumberOfMessages=10)
        found = reply.get("Messages", [])
        if not found:
            break
        bodies += [message["Body"] for message in found]
    return bodies


def test_the_message_has_the_shape_celery_sends(aws):
    payload = {"batch": "b", "path": "x.wav"}
    make_celery(aws).send_task(messages.TRANSCRIBE_TASK, args=[payload])
    (celery_body,) = _receive_all(aws, 2)
    ours = _envelope(messages.encode_job_message(payload, aws.queue_name))
    theirs = _envelope(celery_body)

    assert ours.keys() == theirs.keys()
    assert ours["headers"].keys() == theirs["headers"].keys()
    assert ours["properties"].keys() == theirs["properties"].keys()
    for name in ("content-type", "content-encoding"):
        assert ours[name] == theirs[name]
    assert ours["properties"]["delivery_info"] == theirs["properties"]["delivery_info"]
    assert ours["headers"]["task"] == theirs["headers"]["task"] == "whisperq.transcribe"
    assert base64.b64decode(ours["body"]) == base64.b64decode(theirs["body"])
    assert messages.job_payload_of(celery_body) == payload


def test_jobs_go_ten_per_request_and_none_is_lost(aws):
    from whisperq.schemas import TranscriptionJob

    payloads = [
        TranscriptionJob(
            batch="b", path=f"c{i}.wav", input_key=f"inputs/b/c{i}.wav", sha256="0" * 64, size=1
        ).model_dump(mode="json")
        for i in range(23)
    ]
    sqs = storage.client(aws, "sqs")
    calls = Counter()
    sqs.meta.events.register("before-call.sqs", lambda model, **_: calls.update([model.name]))
    progress = []
    requests = messages.send_jobs(sqs, aws.queue_url, payloads, sent=progress.append)
    assert requests == 3 and calls == Counter({"SendMessageBatch": 3})
    assert progress == [10, 10, 3]
    jobs = [decode_job_message(body) for body in _receive_all(aws, 10)]
    assert sorted(job.path for job in jobs) == sorted(p["path"] for p in payloads)


def test_an_entry_sqs_refuses_is_sent_again_on_its_own(aws):
    """SendMessageBatch answers per entry: a refused one must not be dropped."""
    sqs = storage.client(aws, "sqs")
    real = sqs.send_message_batch

    def refuse_the_second(**kwargs):
        answer = real(**{**kwargs, "Entries": [e for e in kwargs["Entries"] if e["Id"] != "1"]})
        answer.setdefault("Failed", []).append(
            {"Id": "1", "SenderFault": False, "Code": "InternalError", "Message": "try again"}
        )
        return answer

    sqs.send_message_batch = refuse_the_second
    payloads = [{"batch": "b", "path": f"{i}.wav"} for i in range(3)]
    assert messages.send_jobs(sqs, aws.queue_url, payloads) == 2
    found = sorted(messages.job_payload_of(body)["path"] for body in _receive_all(aws, 5))
    assert found == ["0.wav", "1.wav", "2.wav"]

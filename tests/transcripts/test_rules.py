"""QA rules (issue 31): every rule type matches exactly where it should, on synthetic calls
with known phrases and timings; a phrase heard with one word wrong still matches, an
unrelated sentence does not; a wrong rules file fails at load naming the rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from whisperq.qa_rules import RulesError, load_rules, parse_rules
from whisperq.schemas import Segment, TranscriptResult, Word
from whisperq.transcripts.categories import categorize, occurrences, tokens_of
from whisperq.transcripts.conversation import conversation_metrics

WORD_S = 0.4  # each synthetic word lasts this long


def segment(speaker: str, start: float, text: str) -> Segment:
    words = [
        Word(start=start + i * WORD_S, end=start + (i + 1) * WORD_S, word=w, probability=0.9)
        for i, w in enumerate(text.split())
    ]
    end = words[-1].end
    return Segment(
        start=start, end=end, text=text, avg_logprob=-0.2, no_speech_prob=0.1,
        speaker=speaker, words=words,
    )  # fmt: skip


def call(*turns: tuple[str, float, str], duration: float = 120.0) -> TranscriptResult:
    segments = [segment(*turn) for turn in turns]
    metrics = conversation_metrics(segments, duration, speakers=("agent", "customer"))
    return TranscriptResult.model_construct(
        segments=segments, duration=duration, metrics=metrics, text=""
    )


def matched(toml: str, result: TranscriptResult) -> dict[str, list]:
    rules = parse_rules(__import__("tomllib").loads(toml))
    return {item["rule"]: item["evidence"] for item in categorize(rules, result)}


CANCEL = call(
    ("agent", 0.0, "Thank you for calling Acme, this call may be recorded."),
    ("customer", 6.0, "Hi, I want to cancel my subscription please."),
    ("agent", 12.0, "I am sorry to hear that."),
    ("customer", 100.0, "And I want to speak to a supervisor."),
)


def test_phrases_said_by_a_speaker_with_where_and_what():
    found = matched(
        '[[rule]]\nname = "cancel"\nphrases = ["cancel my subscription"]\nspeaker = "customer"',
        CANCEL,
    )
    (hit,) = found["cancel"]
    assert (hit["speaker"], hit["words"]) == ("customer", "cancel my subscription")
    assert hit["start"] == pytest.approx(6.0 + 4 * WORD_S) and hit["end"] > hit["start"]
    # the agent never says it: the same rule for the agent does not match
    agent = '[[rule]]\nname = "c"\nphrases = ["cancel my subscription"]\nspeaker = "agent"'
    assert matched(agent, CANCEL) == {}


def test_time_windows_first_and_last_seconds():
    toml = """
[[rule]]
name = "early supervisor"
phrases = ["supervisor"]
within_first_seconds = 60
[[rule]]
name = "late supervisor"
phrases = ["supervisor"]
within_last_seconds = 30
"""
    assert set(matched(toml, CANCEL)) == {"late supervisor"}


def test_not_said_within_the_first_20_seconds():
    toml = """
[[rule]]
name = "no notice"
absent = ["this call may be recorded"]
speaker = "agent"
within_first_seconds = 20
"""
    assert matched(toml, CANCEL) == {}  # said at 0 s: the rule does not match
    late = call(("agent", 25.0, "By the way this call may be recorded."))
    (evidence,) = matched(toml, late)["no notice"]
    assert evidence["absent"] == ["this call may be recorded"]
    assert (evidence["start"], evidence["end"]) == (0.0, 20.0)
    silent = call(("customer", 1.0, "Hello?"))
    assert "no notice" in matched(toml, silent)


def test_measures_match_exactly_where_they_should():
    hold = call(("agent", 0.0, "Please hold."), ("agent", 80.0, "Thanks for holding."))
    toml = """
[[rule]]
name = "long silence"
longest_silence_over = 60
[[rule]]
name = "short call"
duration_under = 60
[[rule]]
name = "agent talks a lot"
talk_share_over = 0.5
speaker = "agent"
"""
    found = matched(toml, hold)
    assert set(found) == {"long silence"}
    (item,) = found["long silence"]
    assert item["measure"] == "longest_silence_over" and item["value"] > 60


def test_interruptions_per_speaker():
    talky = call(
        ("customer", 0.0, "I have been waiting for a very long time now"),
        ("agent", 1.0, "yes yes"),
        ("customer", 6.0, "and nobody has called me back about it at all"),
        ("agent", 7.0, "right right"),
    )
    counts = {s.speaker: s.interruptions for s in talky.metrics.speakers}
    assert counts["agent"] == 2
    over1 = '[[rule]]\nname = "i"\ninterruptions_over = 1\nspeaker = "agent"'
    over2 = '[[rule]]\nname = "i"\ninterruptions_over = 2\nspeaker = "agent"'
    assert "i" in matched(over1, talky) and matched(over2, talky) == {}


def test_all_any_not_combine():
    toml = """
[[rule]]
name = "escalation without apology"
all = [{ phrases = ["supervisor"] }, { not = { phrases = ["sorry"], speaker = "agent" } }]
[[rule]]
name = "cancel or close"
any = [{ phrases = ["close my account"] }, { phrases = ["cancel my"] }]
"""
    found = matched(toml, CANCEL)
    assert set(found) == {"cancel or close"}  # the agent said sorry
    assert found["cancel or close"][0]["phrase"] == "cancel my"
    rude = call(("customer", 0.0, "Get me a supervisor now"), ("agent", 5.0, "Fine."))
    assert set(matched(toml, rude)) == {"escalation without apology"}


def test_one_word_heard_wrong_still_matches_an_unrelated_sentence_does_not():
    phrase = "I want to close my account"
    heard = call(("customer", 0.0, "I want to clothes my account today"))  # one word wrong
    spelled = call(("customer", 0.0, "please cancelation of my plan"))  # a long word, alike
    unrelated = call(("customer", 0.0, "I want to check my account balance"))
    other = call(("customer", 0.0, "my account is closed I want to"))
    tokens = tokens_of(heard.segments)
    assert occurrences(tokens, phrase) == [(0, 6)]
    assert occurrences(tokens_of(spelled.segments), "cancellation") == [(1, 2)]
    assert occurrences(tokens_of(unrelated.segments), "close my account") == []
    assert occurrences(tokens_of(other.segments), phrase) == []
    short = call(("customer", 0.0, "cancel by subscription"))  # "my" heard as "by"
    assert occurrences(tokens_of(short.segments), "cancel my subscription") == [(0, 3)]


def test_rules_see_redaction_tags():
    paid = call(("customer", 0.0, "it is [CARD_NUMBER] and"))
    assert "card" in matched('[[rule]]\nname = "card"\nphrases = ["[CARD_NUMBER]"]', paid)


@pytest.mark.parametrize(
    ("toml", "says"),
    [
        ('[[rule]]\nphrases = ["x"]', "rule 1 has no name"),
        ('[[rule]]\nname = "a"\nphrasse = ["x"]', "key 'phrasse' (did you mean 'phrases'?)"),
        ('[[rule]]\nname = "a"\nnon_talk_over = "long"', "rule 'a', non_talk_over: a number"),
        ('[[rule]]\nname = "a"\ntalk_share_over = 40', "a share between 0 and 1"),
        ('[[rule]]\nname = "a"\nwithin_first_seconds = 20', "needs phrases or absent"),
        ('[[rule]]\nname = "a"\nphrases = []', "a list of phrases"),
        ('[[rule]]\nname = "a"\nphrases = ["x"]\n' * 2, "two rules are named 'a'"),
        ('[[rule]]\nname = "a"\nany = [{ nam = 1 }]', "rule 'a', any[0]: unknown key 'nam'"),
        ('[[rule]]\nname = "a"\nspeaker = "agent"\nnon_talk_over = 5', "speaker applies to"),
        ('[rules]\nname = "a"', "only [[rule]] tables"),
    ],
)  # fmt: skip
def test_a_wrong_rule_fails_at_load_naming_it(toml, says, tmp_path: Path):
    path = tmp_path / "rules.toml"
    path.write_text(toml)
    with pytest.raises(RulesError) as raised:
        load_rules(path)
    assert says in str(raised.value)
    assert raised.value.exit_code == 2


def test_a_file_that_is_not_toml_is_named(tmp_path: Path):
    path = tmp_path / "rules.toml"
    path.write_text("[[rule]\n")
    with pytest.raises(RulesError, match="is not valid TOML"):
        load_rules(path)


# --- `whisperq report --rules`: rules on stored transcripts, without transcribing again ---

REPORT_RULES = """
[[rule]]
name = "cancel"
phrases = ["cancel my subscription"]
speaker = "customer"
[[rule]]
name = "no notice"
absent = ["this call may be recorded"]
speaker = "agent"
within_first_seconds = 20
[[rule]]
name = "long silence"
longest_silence_over = 60
"""


def test_report_applies_rules_to_stored_transcripts(cli_env, tmp_path):
    import csv
    import io
    import json

    from typer.testing import CliRunner

    from whisperq.cli import app

    from helpers import write_batch, write_result

    runner = CliRunner()
    calls = {"a.wav": CANCEL, "b.wav": call(("agent", 0.0, "Hello, how can I help?"))}
    write_batch(cli_env, "qa", sorted(calls))
    for path, result in calls.items():
        write_result(cli_env, "qa", path, duration=result.duration, segments=result.segments)
    rules = tmp_path / "rules.toml"
    rules.write_text(REPORT_RULES)

    table = runner.invoke(app, ["report", "qa", "--csv", "--rules", str(rules)])
    assert table.exit_code == 0, table.output
    rows = {row["path"]: row for row in csv.DictReader(io.StringIO(table.stdout))}
    assert (rows["a.wav"]["rule_cancel"], rows["b.wav"]["rule_cancel"]) == ("1", "0")
    assert (rows["a.wav"]["rule_no notice"], rows["b.wav"]["rule_no notice"]) == ("0", "1")
    assert rows["a.wav"]["rule_long silence"] == "1"  # 14.8 s to 100 s: nobody speaks

    data = json.loads(runner.invoke(app, ["report", "qa", "--json", "--rules", str(rules)]).stdout)
    (hit,) = data["categories"]["cancel"]
    assert hit["path"] == "a.wav" and hit["evidence"][0]["words"] == "cancel my subscription"

    listed = runner.invoke(app, ["report", "qa", "--rules", str(rules), "--category", "cancel"])
    said = " ".join(listed.output.split())
    assert "1 call(s) in 'cancel'" in said and 'customer: "cancel my subscription"' in said

    rules.write_text('[[rule]]\nname = "x"\nphrase = ["typo"]\n')
    wrong = runner.invoke(app, ["report", "qa", "--rules", str(rules)])
    assert wrong.exit_code == 2 and "unknown key 'phrase'" in " ".join(wrong.output.split())


def test_a_batch_submitted_with_rules_gets_categories_in_every_result(aws, make_speech, tmp_path):
    """The worker applies the batch's rules to the transcript it writes (tiny.en, espeak)."""
    import json

    from whisperq import keys, storage
    from whisperq.schemas import TranscriptionOptions
    from whisperq.worker.runner import JobRunner

    from helpers import upload_job

    audio = make_speech(tmp_path / "call.wav", "Hello. I would like to cancel my subscription.")
    tables = [
        {"name": "cancel", "phrases": ["cancel my subscription"]},
        {"name": "refund", "phrases": ["refund"]},
        {"name": "short call", "duration_under": 60},
    ]
    options = TranscriptionOptions(rules=tables, language="en")
    payload = upload_job(aws, audio, "qa", "call.wav", options)
    assert JobRunner(aws).run(payload) == "done"
    body = storage.client(aws, "s3").get_object(
        Bucket=aws.bucket, Key=keys.result_key("qa", "call.wav", "json")
    )["Body"]
    result = json.loads(body.read())
    found = {item["rule"]: item["evidence"] for item in result["categories"]}
    assert set(found) == {"cancel", "short call"}
    assert "cancel" in found["cancel"][0]["words"].lower()
    assert result["options"]["rules"] == tables


def test_submit_rules_are_checked_before_anything_is_uploaded(cli_env, tmp_path):
    from typer.testing import CliRunner

    from whisperq import storage
    from whisperq.cli import app

    (tmp_path / "a.wav").write_bytes(b"a")
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\nname = "x"\nabsnet = ["hello"]\n')
    result = CliRunner().invoke(app, ["submit", str(tmp_path / "a.wav"), "--rules", str(rules)])
    assert result.exit_code == 2 and "did you mean 'absent'" in " ".join(result.output.split())
    s3 = storage.client(cli_env, "s3")
    assert not s3.list_objects_v2(Bucket=cli_env.bucket).get("KeyCount")

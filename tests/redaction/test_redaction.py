"""PCI/PII redaction: number normalisation, detectors, rewriting of text and words."""

from __future__ import annotations

import re

import pytest

from whisperq.redaction.numbers import digit_runs, luhn_valid
from whisperq.redaction.rewriting import Redaction, redact
from whisperq.redaction.tokens import tokenize
from whisperq.schemas import Segment, Word
from whisperq.vocabulary import compile_user_patterns, expand_groups

CARD = "4532015112830366"  # Luhn-valid test Visa
CARD_WORDS = "four five three two zero one five one one two eight three zero three six six"


def seg(text: str, start: float = 0.0, end: float | None = None, **kw: object) -> Segment:
    end = start + max(1.0, len(text.split()) * 0.4) if end is None else end
    return Segment(start=start, end=end, text=text, avg_logprob=-0.1, no_speech_prob=0.0, **kw)


def wseg(text: str, start: float = 0.0, step: float = 0.5, **kw: object) -> Segment:
    """A segment with words as the engine stores them (stripped, unlike faster-whisper's
    leading spaces)."""
    words = [
        Word(start=start + i * step, end=start + (i + 1) * step - 0.05, word=w, probability=0.9)
        for i, w in enumerate(text.split())
    ]
    return Segment(
        start=start,
        end=start + len(words) * step,
        text=text,
        avg_logprob=-0.1,
        no_speech_prob=0.0,
        words=words,
        **kw,
    )


def types(redactions: list[Redaction]) -> list[str]:
    return [r["type"] for r in redactions]


def all_text(segments: list[Segment]) -> str:
    parts = [s.text for s in segments]
    parts += [w.word for s in segments for w in s.words or []]
    return " ".join(parts)


def digits_left(segments: list[Segment]) -> str:
    return re.sub(r"\D", "", all_text(segments))


# --- normalisation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "digits"),
    [
        ("4532 0151 1283 0366", CARD),
        ("4532-0151-1283-0366", CARD),
        (CARD_WORDS, CARD),
        ("forty five thirty two oh one fifty one twelve eighty three oh three sixty six", CARD),
        ("double four triple seven", "44777"),
        ("nine thousand", "9000"),
        ("forty two", "42"),
        ("oh seven", "07"),
        ("one hundred and two", "102"),
        ("4532 uh 0151", "45320151"),
        ("12/27", "1227"),
        ("twelve slash twenty seven", "1227"),
        ("forty-two", "42"),
    ],
)
def test_digit_runs_normalise_number_styles(text: str, digits: str) -> None:
    runs = digit_runs(tokenize([seg(text)]))
    assert [run.digits for run in runs] == [digits]


def test_each_digit_remembers_its_tokens() -> None:
    (run,) = digit_runs(tokenize([seg("double four 12")]))
    assert run.digits == "4412"
    assert run.sources == ((0, 1), (0, 1), (2,), (2,))


def test_interjection_oh_is_not_a_digit() -> None:
    assert digit_runs(tokenize([seg("oh I see")])) == []


def test_words_less_segment_tokens_are_interpolated_by_characters() -> None:
    tokens = tokenize([seg("ab cd", start=10.0, end=15.0)])
    assert [(t.text, t.start, t.end) for t in tokens] == [("ab", 10.0, 12.0), ("cd", 13.0, 15.0)]


# --- card numbers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "segments",
    [
        [seg("my number is 4532 0151 1283 0366 thanks")],
        [seg("4532015112830366")],
        [seg(f"it is {CARD_WORDS} okay")],
        [seg("forty five thirty two oh one fifty one twelve eighty three oh three sixty six")],
        [seg("4532 0151", 0, 2), seg("1283 0366", 2.5, 4)],  # split across segments
        [seg("4532 0151 uh 1283 um 0366")],
        [seg("4532 0151 sorry, let me start again, 4532 0151 1283 0366")],
        [seg("four five three two oh one five one one two eight three oh three double six")],
        [seg("Oh, 4532 0151 1283 0366 123.")],  # interjection before, CVV straight after
    ],
    ids=["digits", "one-token", "words", "pairs", "split", "fillers", "restart", "double", "+cvv"],
)
def test_luhn_valid_card_is_redacted_without_cue(segments: list[Segment]) -> None:
    out, found = redact(segments, ["pci"])
    assert types(found) == ["CARD_NUMBER"]
    assert "[CARD_NUMBER]" in all_text(out)
    assert digits_left(out) == ""


def test_card_split_across_segments_gets_a_tag_in_each_and_one_redaction() -> None:
    out, found = redact([seg("it's 4532 0151", 0, 2), seg("1283 0366 yes", 2.5, 4)], ["pci"])
    assert [s.text for s in out] == ["it's [CARD_NUMBER]", "[CARD_NUMBER] yes"]
    assert found == [
        {
            "type": "CARD_NUMBER",
            "start": pytest.approx(0.5, abs=0.5),
            "end": pytest.approx(3.6, abs=0.2),
            "speaker": None,
            "channel": None,
        }
    ]


def test_misheard_card_near_card_word_is_redacted() -> None:
    misheard = "4532 0151 1283 0367"  # one digit off: fails Luhn
    assert not luhn_valid(misheard.replace(" ", ""))
    out, found = redact([seg(f"the long number on my card is {misheard}")], ["pci"])
    assert types(found) == ["CARD_NUMBER"]
    assert out[0].text == "the long number on my card is [CARD_NUMBER]"


def test_card_cue_on_the_other_channel_counts() -> None:
    segments = [
        seg("can I take the card number please", 0, 3, speaker="agent", channel=0),
        seg("4532 0151 1283 0367", 4, 9, speaker="caller", channel=1),
    ]
    out, found = redact(segments, ["pci"])
    assert found[0]["type"] == "CARD_NUMBER"
    assert (found[0]["speaker"], found[0]["channel"]) == ("caller", 1)
    assert out[1].text == "[CARD_NUMBER]"


def test_interleaved_turns_detect_per_channel() -> None:
    segments = [
        seg("four five three two oh one five one", 0, 4, speaker="caller", channel=1),
        seg("mm-hm go on", 4, 5, speaker="agent", channel=0),
        seg("one two eight three oh three six six", 5, 9, speaker="caller", channel=1),
    ]
    out, found = redact(segments, ["pci"])
    assert types(found) == ["CARD_NUMBER"]
    assert out[1].text == "mm-hm go on"
    assert digits_left(out) == ""


# --- words ------------------------------------------------------------------------------


def test_words_are_replaced_with_tags_and_timings_kept() -> None:
    segment = wseg(f"card {CARD_WORDS} thanks", start=1.0)
    out, found = redact([segment], ["pci"])
    (new,) = out
    assert new.text == "card [CARD_NUMBER] thanks"
    assert new.words is not None and segment.words is not None
    assert [(w.start, w.end) for w in new.words] == [(w.start, w.end) for w in segment.words]
    assert [w.word for w in new.words[1:17]] == ["[CARD_NUMBER]"] * 16
    assert new.words[0].word == "card" and new.words[-1].word == "thanks"
    assert found[0]["start"] == segment.words[1].start
    assert found[0]["end"] == segment.words[16].end
    assert digits_left(out) == "" and "four" not in all_text(out)
    assert segment.words[1].word == "four"  # input untouched


# --- CVV / expiry -----------------------------------------------------------------------


def test_cvv_and_expiry_near_cues() -> None:
    text = (
        "and the expiry date is oh three slash twenty seven and the security code "
        "on the back is seven three one"
    )
    out, found = redact([seg(text, 0, 12)], ["pci"])
    assert sorted(types(found)) == ["CVV", "EXPIRY"]
    assert out[0].text == (
        "and the expiry date is [EXPIRY] and the security code on the back is [CVV]"
    )


def test_written_expiry_and_cvv() -> None:
    out, _ = redact([seg("exp 12/27 cvv 123", 0, 4)], ["pci"])
    assert out[0].text == "exp [EXPIRY] cvv [CVV]"


def test_expiry_with_month_word() -> None:
    out, found = redact([seg("it expires March twenty twenty seven", 0, 4)], ["pci"])
    assert types(found) == ["EXPIRY"]
    assert out[0].text == "it expires [EXPIRY]"


# --- PII --------------------------------------------------------------------------------


def test_email_written_and_spoken() -> None:
    out, found = redact(
        [
            seg("send it to john.smith@example.co.uk please", 0, 3),
            seg("my email is jane dot doe at gmail dot com thanks", 3, 8),
            seg("or jd at example.org", 8, 10),
        ],
        ["pii"],
    )
    assert types(found) == ["EMAIL"] * 3
    assert [s.text for s in out] == [
        "send it to [EMAIL] please",
        "my email is [EMAIL] thanks",
        "or [EMAIL]",
    ]


@pytest.mark.parametrize(
    "segments",
    [
        [seg("my email is john .smith .example .com thanks")],  # faster-whisper's dots
        [seg("it's john dot smith dot example dot com")],
        [seg("john period smith period example period co period uk")],
        [seg("write to john.smith.example.com")],  # one token, as Whisper may write it
        [wseg("john .smith .example .com")],  # words, as the engine stores them
    ],
    ids=["leading-dots", "dot-words", "period-words", "one-token", "words"],
)
def test_a_spoken_email_whose_at_was_lost_is_still_redacted(segments: list[Segment]) -> None:
    """Whisper drops "at" now and then: "john dot smith at example dot com" becomes
    "john .smith .example .com". A name, dots and a known top-level domain -- three parts
    or more -- is an address."""
    out, found = redact(segments, ["pii"])
    assert types(found) == ["EMAIL"]
    assert "smith" not in all_text(out) and "example" not in all_text(out)
    assert "[EMAIL]" in out[0].text


@pytest.mark.parametrize(
    "text",
    [
        "go to example.com and log in",  # a website: a domain and its TLD
        "go to example dot com and log in",
        "visit www dot example dot co dot uk",  # www: a website's host
        "see support.example.com for help",  # a service's host, not a person
        "version 2.1.3 is out",  # dots, but no domain
        "that's it. Smith. Example. Com.",  # sentences, not dots inside a name
    ],
)
def test_websites_and_dotted_words_are_not_emails(text: str) -> None:
    out, found = redact([seg(text)], ["pii"])
    assert found == [] and out[0].text == text


def test_email_not_in_pci() -> None:
    out, found = redact([seg("john@example.com")], ["pci"])
    assert found == [] and out[0].text == "john@example.com"


def test_phone_with_cue_and_by_shape() -> None:
    out, found = redact(
        [
            seg("best mobile is oh seven seven double oh nine double oh one two three", 0, 6),
            seg("or try 020 7946 0018 later", 30, 33),
        ],
        ["pii"],
    )
    assert types(found) == ["PHONE", "PHONE"]
    assert [s.text for s in out] == ["best mobile is [PHONE]", "or try [PHONE] later"]


def test_ssn() -> None:
    out, found = redact([seg("my social security number is 123 45 6789", 0, 4)], ["pii"])
    assert types(found) == ["SSN"]
    assert out[0].text == "my social security number is [SSN]"


def test_date_of_birth() -> None:
    out, found = redact(
        [seg("date of birth the third of March nineteen eighty five", 0, 5)], ["pii"]
    )
    assert types(found) == ["DATE_OF_BIRTH"]
    assert out[0].text == "date of birth the [DATE_OF_BIRTH]"


def test_iban_written_and_sort_code_and_account() -> None:
    out, found = redact(
        [
            seg("it's GB29 NWBK 6016 1331 9268 19 okay", 0, 5),
            seg("sort code twelve thirty four fifty six", 60, 63),
            seg("account number 31926819", 120, 123),
        ],
        ["pii"],
    )
    assert types(found) == ["IBAN", "SORT_CODE", "BANK_ACCOUNT"]
    assert [s.text for s in out] == [
        "it's [IBAN] okay",
        "sort code [SORT_CODE]",
        "account number [BANK_ACCOUNT]",
    ]


def test_user_pattern_on_normalised_text() -> None:
    out, found = redact(
        [seg("my member id is MB one two three four five six ok", 0, 4)],
        [],
        {"member_id": r"MB \d{6}"},
    )
    assert types(found) == ["MEMBER_ID"]
    assert out[0].text == "my member id is [MEMBER_ID] ok"


def test_bad_user_pattern_and_group_are_refused() -> None:
    with pytest.raises(ValueError, match="user pattern"):
        compile_user_patterns({"x": "("})
    with pytest.raises(ValueError, match="letters"):
        compile_user_patterns({"bad name": "x"})
    with pytest.raises(ValueError, match="unknown redaction group"):
        redact([seg("hi")], ["pcii"])


def test_groups() -> None:
    assert expand_groups(["pci"]) == {"CARD_NUMBER", "CVV", "EXPIRY"}
    assert expand_groups(["pii"]) >= expand_groups(["pci"]) | {"EMAIL"}
    assert expand_groups(["email"]) == {"EMAIL"}


# --- negatives --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "that's forty nine ninety nine a month",
        "I'll call at three thirty tomorrow",
        "we ordered two hundred units last week",
        "your order number is 1234 5678 9012 3456 okay",  # 16 digits, fails Luhn, no cue
        "oh I see, one moment",
        "the total was $1,249.99",
    ],
)
def test_negatives_are_not_redacted(text: str) -> None:
    assert not luhn_valid("1234567890123456")
    out, found = redact([seg(text, 100, 105)], ["pii"])
    assert found == []
    assert out[0].text == text


def test_order_number_far_from_card_cue_is_kept() -> None:
    _, found = redact(
        [seg("I paid by card", 0, 2), seg("order number 1234 5678 9012 3456", 120, 124)], ["pci"]
    )
    assert found == []


def test_no_values_in_redaction_list() -> None:
    _, found = redact([seg(f"card {CARD} email a@b.com")], ["pii"])
    assert set(found[0]) == {"type", "start", "end", "speaker", "channel"}
    assert CARD not in repr(found) and "a@b.com" not in repr(found)


# --- how Whisper really writes them (benchmarks/redaction.py found each of these) -------


def test_hyphenated_pieces_and_misheard_digits_inside_a_card() -> None:
    """faster-whisper splits "4-5-3-2" into the words "4", "-5", "-3", "-2"; a digit it
    misheard ("-I" for five) is still inside the run."""
    words = "it's 4 -5 -3 -2 -0 -1 -I -1 -1 -2 -8 -3 -0 -3 -6 -6 thanks"
    out, found = redact([wseg(f"the card number please {words}")], ["pci"])
    assert types(found) == ["CARD_NUMBER"]
    assert digits_left(out) == "" and "-I" not in all_text(out)


def test_a_card_heard_in_pieces_near_its_cue_is_redacted_piece_by_piece() -> None:
    segments = [
        seg("what's the long number on your card", 0, 3, speaker="agent", channel=0),
        seg("4 I'm free to 4 4 2 3 2 3 2 2 um 1 8 3 1", 4, 12, speaker="caller", channel=1),
        seg("and the next bit please", 12.5, 14, speaker="agent", channel=0),
        seg("6 6 1 8", 15, 17, speaker="caller", channel=1),
    ]
    out, found = redact(segments, ["pci"])
    assert set(types(found)) == {"CARD_NUMBER"}
    assert digits_left(out) == ""


def test_a_long_run_without_cue_or_luhn_is_still_a_card_unless_it_is_an_order() -> None:
    _, found = redact([seg("it's $3.003 $27.004 $26.004 $5.003 $5.003 no that's all")], ["pci"])
    assert types(found) == ["CARD_NUMBER"]
    _, found = redact([seg("your tracking is 1234 5678 9012 3456 7")], ["pci"])
    assert found == []


def test_the_next_answer_is_another_value() -> None:
    """The other speaker's question ends a run: the CVV is not glued to the expiry."""
    segments = [
        seg("and the expiry date", 0, 2, speaker="agent", channel=0),
        seg("eleven twenty five", 3, 5, speaker="caller", channel=1),
        seg("lovely and the security code", 6, 8, speaker="agent", channel=0),
        seg("it's six one", 9, 10, speaker="caller", channel=1),  # a digit lost: 2 of 3
    ]
    _, found = redact(segments, ["pci"])
    assert types(found) == ["EXPIRY", "CVV"]


@pytest.mark.parametrize(
    "text",
    [
        "the security code is on the back. That is one hundred and twenty pounds fifty for "
        "three items",
        "thanks for the security code. Renewal is forty nine ninety nine a year",
        "the expiry is fine. I'll email a receipt for 12.50",
        "the expiry date is on the card. Delivery is on the first of May",
    ],
)
def test_prices_quantities_and_days_near_cues_are_kept(text: str) -> None:
    (segment,) = [seg(text, 0, 10)]
    out, found = redact([segment], ["pci"])
    assert found == [], found
    assert out[0].text == text


def test_a_time_after_at_is_not_an_email_and_dotted_domains_are() -> None:
    _, found = redact([seg("see you Tuesday at 10 .30 then")], ["pii"])
    assert found == []
    out, found = redact([seg("it's mary underscore jones eighty four at mail .co .uk")], ["pii"])
    assert types(found) == ["EMAIL"]
    assert out[0].text == "it's [EMAIL]"

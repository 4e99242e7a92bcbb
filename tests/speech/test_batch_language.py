"""A batch's language as a worker process learns it from the batch's first files (pure
rules of whisperq.speech.batch_language: the vote, the wrong-language check, when a batch
is too mixed to pack, how much a process remembers)."""

import pytest

from whisperq.schemas import Segment, Word
from whisperq.speech import batch_language
from whisperq.speech.batch_language import (
    BatchLanguage,
    BatchLanguages,
    in_another_language,
    too_mixed,
    undecidable,
    vote,
)


def share(*probabilities: float) -> Segment:
    """One file's share of a packed window: a word per probability."""
    words = [
        Word(start=i * 0.4, end=i * 0.4 + 0.4, word=f"w{i}", probability=p)
        for i, p in enumerate(probabilities)
    ]
    return Segment(
        start=0.0, end=0.4 * len(words), text="", avg_logprob=-0.2, no_speech_prob=0.01, words=words
    )


@pytest.mark.parametrize(
    ("languages", "learned"),
    [
        ([], None),
        (["en"], None),
        (["en", "de"], None),
        (["en", "en"], "en"),  # two of three agree: the third cannot change it
        (["en", "de", "de"], "de"),
        (["en", "de", "fr"], None),
        (["en", "de", "fr", "en"], None),  # only the first three vote
    ],
)
def test_the_language_of_a_majority_of_the_first_three_files_is_learned(languages, learned):
    assert vote(languages) == learned


def test_three_languages_in_three_files_cannot_be_decided():
    assert not undecidable(["en", "de"])
    assert not undecidable(["en", "de", "de"])
    assert undecidable(["en", "de", "fr"])


@pytest.mark.parametrize(
    ("other", "judged", "mixed"),
    [
        (2, 3, False),  # too few files to judge a batch by
        (2, 8, False),  # a quarter: still packed
        (3, 8, True),
        (3, 12, False),
        (4, 12, True),
        (0, 100, False),
    ],
)
def test_a_batch_with_over_a_quarter_in_another_language_is_too_mixed(other, judged, mixed):
    assert too_mixed(other, judged) is mixed


def test_a_share_whisper_is_unsure_of_may_be_in_another_language():
    sure, unsure = share(0.9, 0.8), share(0.3, 0.5)
    assert not in_another_language([sure])
    # mean log probability (ln 0.3 + ln 0.5) / 2 = -0.95 < -0.6
    assert in_another_language([unsure])
    assert batch_language.mean_word_log_probability([unsure]) == pytest.approx(-0.9486, abs=1e-3)
    assert not in_another_language([])  # nothing said: judged by the other checks
    assert not in_another_language([share()])


def test_a_batch_learns_its_language_then_judges_its_packed_files():
    batch = BatchLanguage()
    assert batch.learning and batch.packs
    batch.add_vote("en")
    assert batch.learning
    batch.add_vote("en")
    assert batch.language == "en" and not batch.learning and batch.packs
    batch.add_vote("de")  # votes after learning change nothing
    assert batch.votes == ["en", "en"] and batch.language == "en"
    for language in ["en"] * 6 + ["de"] * 2:  # a quarter in German: still packed
        batch.add_packed(language)
    assert (batch.judged, batch.other) == (8, 2) and batch.packs
    batch.add_packed("de")
    assert (batch.judged, batch.other) == (9, 3) and not batch.packs
    assert "3 of 9" in (batch.stopped or "")


def test_a_batch_with_no_majority_stops_packing():
    batch = BatchLanguage()
    for language in ("en", "de", "fr"):
        batch.add_vote(language)
    assert batch.language is None and not batch.learning and not batch.packs
    batch.add_packed("en")  # nothing is judged without a learned language
    assert batch.judged == 0


def test_a_process_remembers_the_latest_batches_only():
    languages = BatchLanguages(kept=2)
    first = languages.for_batch("a")
    first.add_vote("en")
    assert languages.for_batch("a") is first
    languages.for_batch("b")
    languages.for_batch("a")  # used again: now the latest
    languages.for_batch("c")  # "b" is forgotten
    assert len(languages) == 2
    assert languages.for_batch("a") is first
    assert languages.for_batch("b").votes == []

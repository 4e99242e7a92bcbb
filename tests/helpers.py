"""Scoring helpers for tests that check what was said."""

from __future__ import annotations

import jiwer
from whisper_normalizer.english import EnglishTextNormalizer

_normalize = EnglishTextNormalizer()


def word_error_rate(reference: str, hypothesis: str) -> float:
    """WER after Whisper's English normalisation (case, punctuation, numbers)."""
    return jiwer.wer(_normalize(reference), _normalize(hypothesis) or "<empty>")


def words(text: str) -> set[str]:
    return set(_normalize(text).split())

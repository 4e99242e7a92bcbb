"""One encoder pass where faster-whisper makes two: detecting a file's language and then
decoding it (issue 29).

Given no language, ``WhisperModel.transcribe`` encodes the first 30 s to detect the
language (``detect_language``) and encodes the same 30 s again to decode them
(``generate_segments``). For a short file that is two encoder passes where one does, and
short files decoded alone are what a batch without ``--language`` pays for most. The two
inputs are the same mel frames but for the last one: detection pads after all the
frames the feature extractor gave, decoding after all but the last (its
``content_frames``). ``EncoderMemo`` wraps the model's ``encode`` and gives the second
call the first one's output when the inputs differ in at most one frame.

The difference in that frame (10 ms at the file's end) changes nothing measurable; any
other audio differs in many frames and is encoded again. One output is kept per thread
(about 3 MB for base, 8 MB for large-v3), replaced by the next.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

# Frames (10 ms each) two encoder inputs may differ in and still share an output.
MAX_DIFFERENT_FRAMES = 1


def same_window(first: np.ndarray, second: np.ndarray) -> bool:
    """Whether two encoder inputs (mel features, frames last) are the same window: the
    same shape, differing in at most ``MAX_DIFFERENT_FRAMES`` frames."""
    if first.shape != second.shape:
        return False
    differs = np.not_equal(first, second)
    frames = differs.reshape(-1, differs.shape[-1]).any(axis=0)
    return int(frames.sum()) <= MAX_DIFFERENT_FRAMES


class EncoderMemo:
    """``encode(features)`` that returns the previous output (of this thread) for the same
    window (``same_window``) instead of encoding it again."""

    def __init__(self, encode: Callable[[np.ndarray], Any]) -> None:
        self.encode = encode
        self._last = threading.local()
        self.reused = 0  # outputs given again: how many encoder passes were saved

    def __call__(self, features: np.ndarray) -> Any:
        last = getattr(self._last, "pair", None)
        if last is not None and same_window(last[0], features):
            self.reused += 1
            # given once, then forgotten: nothing holds an output longer than it is needed
            self._last.pair = None
            return last[1]
        output = self.encode(features)
        self._last.pair = (np.array(features, copy=True), output)
        return output


def remember_encodings(model: Any) -> EncoderMemo:
    """Wrap ``model`` (a faster_whisper.WhisperModel)'s ``encode`` in an ``EncoderMemo``;
    returns the memo (its ``reused`` counts the passes saved)."""
    memo = EncoderMemo(model.encode)
    model.encode = memo
    return memo

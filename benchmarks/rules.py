"""QA rules on transcribed calls against the same rules on the reference text (issue 31).

    .venv/bin/python benchmarks/rules.py            # base, 24 synthetic calls
    .venv/bin/python benchmarks/rules.py --quick    # tiny.en, 6 calls

Synthetic calls (``benchmarks/calls.py``: espeak-ng voices, 8 and 16 kHz, mono and
stereo, mixed to mono here) are transcribed as a worker does
(``engine.transcribe_file``); phrase rules (below) are applied to the transcript and to
the call's reference text. Per rule: a call the rule matches on the reference is a true
call; precision and recall of the transcript's matches against those. Also: rules per
second, given as the time to apply every rule to 1,000 calls (the transcripts repeated).
The figures are from synthetic speech, not real recordings.
"""

from __future__ import annotations

import argparse
import sys
import time
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from calls import generate  # noqa: E402

from whisperq.qa_rules import parse_rules  # noqa: E402
from whisperq.schemas import Segment, TranscriptionOptions, TranscriptResult  # noqa: E402
from whisperq.speech import engine  # noqa: E402
from whisperq.transcripts.categories import categorize  # noqa: E402
from whisperq.transcripts.conversation import conversation_metrics  # noqa: E402

DATA = HERE / ".data" / "rules"
RULES = """
[[rule]]
name = "cancel"
phrases = ["cancel my subscription"]
[[rule]]
name = "refund"
phrases = ["i would like a refund"]
[[rule]]
name = "retention offer"
phrases = ["may i offer you a discount"]
[[rule]]
name = "survey"
phrases = ["take a short survey"]
[[rule]]
name = "outage"
phrases = ["two outages in your area"]
[[rule]]
name = "expired card"
phrases = ["the card has expired"]
[[rule]]
name = "router restart"
phrases = ["restart the router"]
[[rule]]
name = "delivery address"
phrases = ["change the delivery address"]
[[rule]]
name = "complaint words"
any = [{ phrases = ["charged twice"] }, { phrases = ["keeps dropping"] }]
"""


def _as_result(segments: list[Segment], duration: float) -> TranscriptResult:
    return TranscriptResult.model_construct(
        segments=segments, duration=duration, metrics=conversation_metrics(segments, duration)
    )


def _reference(text: str, duration: float) -> TranscriptResult:
    segment = Segment(start=0.0, end=duration, text=text, avg_logprob=0.0, no_speech_prob=0.0)
    return _as_result([segment], duration)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny.en and 6 calls")
    parser.add_argument("--model", default=None, help="default: base (tiny.en with --quick)")
    parser.add_argument("--calls", type=int, default=None, help="default: 24 (6 with --quick)")
    args = parser.parse_args()
    model = args.model or ("tiny.en" if args.quick else "base")
    count = args.calls or (6 if args.quick else 24)
    rules = parse_rules(tomllib.loads(RULES))
    calls = generate(DATA / f"calls-{count}", count, turns_per_call=6)

    config = engine.EngineConfig(model=model)
    loaded = engine.load_model(config)
    options = TranscriptionOptions(channels="mix", language="en")
    heard, truth = [], []
    for call in calls:
        transcript = engine.transcribe_file(loaded, call.path, options, config)
        heard.append(_as_result(list(transcript.segments), transcript.duration))
        truth.append(_reference(call.reference, call.seconds))

    names = [rule.name for rule in rules]
    found = [{item["rule"] for item in categorize(rules, result)} for result in heard]
    expected = [{item["rule"] for item in categorize(rules, result)} for result in truth]
    print(f"rules on {len(calls)} synthetic calls, model {model} (reference = the script read)")
    print(f"{'rule':<18} {'calls':>5} {'found':>5} {'right':>5} {'precision':>9} {'recall':>7}")
    totals = [0, 0, 0]
    for name in names:
        true_calls = sum(name in e for e in expected)
        hits = sum(name in f for f in found)
        right = sum(name in f and name in e for f, e in zip(found, expected, strict=True))
        totals = [totals[0] + true_calls, totals[1] + hits, totals[2] + right]
        precision = f"{right / hits:.2f}" if hits else "-"
        recall = f"{right / true_calls:.2f}" if true_calls else "-"
        print(f"{name:<18} {true_calls:>5} {hits:>5} {right:>5} {precision:>9} {recall:>7}")
    true_calls, hits, right = totals
    print(
        f"{'all':<18} {true_calls:>5} {hits:>5} {right:>5} "
        f"{(right / hits if hits else 0):>9.2f} {(right / true_calls if true_calls else 0):>7.2f}"
    )
    false_matches = hits - right
    print(f"false matches: {false_matches}; missed: {true_calls - right}")

    thousand = (heard * (1000 // len(heard) + 1))[:1000]
    started = time.perf_counter()
    for result in thousand:
        categorize(rules, result)
    took = time.perf_counter() - started
    print(f"applying {len(rules)} rules to 1,000 calls: {took:.2f} s")


if __name__ == "__main__":
    main()

"""Synthetic call-centre recordings with known transcripts (espeak-ng + sox).

Varied voices and speaking rates, 8 kHz telephone and 16 kHz, mono and stereo, pauses
between turns: the audio is public, reproducible and scored against exact references.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

LINES = [
    "Thank you for calling customer support, my name is Sarah, how can I help you today?",
    "Hi, my internet connection keeps dropping every evening around eight o'clock.",
    "I am sorry to hear that. Can I have your account number, please?",
    "Sure, it is four five six seven eight nine.",
    "Thank you. I can see two outages in your area this week.",
    "The technician will visit you on Monday morning between nine and twelve.",
    "I was charged twice for the same month and I would like a refund.",
    "I have opened a refund request, you will see the money in five working days.",
    "Please send the confirmation to my email address.",
    "Can you check the status of my order? It was supposed to arrive on Friday.",
    "Your parcel is at the local depot and will be delivered tomorrow.",
    "I would like to cancel my subscription at the end of this month.",
    "Before you go, may I offer you a discount of twenty percent for the next year?",
    "That sounds reasonable, please apply the discount to my account.",
    "Is there anything else I can help you with today?",
    "No, that is all, thank you very much for your help.",
    "Could you spell your last name for me, please?",
    "My new router shows a red light and the wireless network is gone.",
    "Please restart the router and wait for two minutes.",
    "The green light is back and the internet works again.",
    "I would like to change the delivery address for my next order.",
    "Your payment was declined because the card has expired.",
    "I will update my card details on the website tonight.",
    "We value your feedback, would you take a short survey after this call?",
]
VOICES = ["en-us", "en-gb", "en-us+f3", "en-gb+m3", "en-us+m7", "en-gb-x-rp+f2"]
# (sample rate, channels) cycling over the calls: telephone and wideband, mono and stereo
FORMATS = [(8000, 1), (16000, 1), (8000, 2), (16000, 2)]


@dataclass(frozen=True)
class Call:
    path: Path
    reference: str
    seconds: float


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True)


def make_call(path: Path, turns: list[str], rng: random.Random, rate: int, channels: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pieces = []
        for index, text in enumerate(turns):
            voice = VOICES[(index + rng.randrange(2)) % len(VOICES)]
            speed = str(rng.randrange(140, 175))
            raw = Path(tmp) / f"{index:03d}.wav"
            _run("espeak-ng", "-v", voice, "-s", speed, "-w", str(raw), text)
            piece = Path(tmp) / f"{index:03d}-r.wav"
            pause = f"{rng.uniform(0.3, 1.8):.2f}"
            _run("sox", str(raw), "-r", str(rate), "-c", "1", str(piece), "pad", "0", pause)
            pieces.append(str(piece))
        joined = Path(tmp) / "joined.wav"
        _run("sox", *pieces, str(joined))
        _run("sox", str(joined), "-c", str(channels), str(path))


def generate(out: Path, calls: int, turns_per_call: int, seed: int = 7) -> list[Call]:
    """Make (or reuse) ``calls`` recordings under ``out``; returns them with references."""
    for tool in ("espeak-ng", "sox", "soxi"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: `make system-deps` installs espeak-ng and sox")
    out.mkdir(parents=True, exist_ok=True)
    index_file = out / "calls.json"
    wanted = {"calls": calls, "turns": turns_per_call, "seed": seed}
    if index_file.exists():
        index = json.loads(index_file.read_text())
        if index.get("wanted") == wanted:
            return [Call(out / c["file"], c["reference"], c["seconds"]) for c in index["calls"]]
    rng = random.Random(seed)
    made = []
    for number in range(calls):
        turns = rng.sample(LINES, k=turns_per_call)
        rate, channels = FORMATS[number % len(FORMATS)]
        layout = "stereo" if channels == 2 else "mono"
        path = out / f"call-{number:02d}-{rate // 1000}k-{layout}.wav"
        make_call(path, turns, rng, rate, channels)
        soxi = subprocess.run(["soxi", "-D", str(path)], check=True, capture_output=True, text=True)
        seconds = float(soxi.stdout)
        made.append(Call(path, " ".join(turns), seconds))
    listed = [{"file": c.path.name, "reference": c.reference, "seconds": c.seconds} for c in made]
    index_file.write_text(json.dumps({"wanted": wanted, "calls": listed}, indent=1))
    return made

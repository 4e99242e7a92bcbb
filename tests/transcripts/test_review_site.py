"""The review site's HTML without a browser: what files it writes, what each page holds,
that every value from a transcript is escaped, and that a redacted call shows nothing of
what was removed. tests/transcripts/test_review_browser.py drives the pages in Chromium."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from review_samples import (
    BATCH,
    CARD,
    FAILURE,
    PATTERN,
    SCRIPT,
    mono_call,
    redacted_call,
    sample_results,
    stereo_call,
    synthetic_result,
)

from whisperq.errors import WhisperqError
from whisperq.schemas import ConversationMetrics
from whisperq.transcripts.conversation import batch_conversation
from whisperq.transcripts.review_call import AudioSource
from whisperq.transcripts.review_html import (
    count_bins,
    href,
    nice_step,
    seconds_bins,
    share_bins,
)
from whisperq.transcripts.review_site import BatchFigures, ReviewSite, _Tally
from whisperq.transcripts.review_view import CallView, category_names, turns


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text, of a page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def all(self, tag: str, css: str | None = None) -> list[dict[str, str | None]]:
        return [
            attrs
            for name, attrs in self.tags
            if name == tag and (css is None or css in (attrs.get("class") or "").split())
        ]


def data_file(path: Path) -> tuple[int, list]:
    """``WQ.rows(n, [...]);`` -> (n, [...])."""
    match = re.fullmatch(r"WQ\.\w+\((\d+), (.*)\);\n", path.read_text(encoding="utf-8"), re.S)
    assert match, path
    return int(match.group(1)), json.loads(match.group(2))


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """The sample calls with a copy of their audio beside each page, and a failure."""
    writer = ReviewSite(tmp_path / "site", BATCH, top=3)
    for result in sample_results():
        name = result.path.rsplit("/", 1)[-1]
        path = result.path
        writer.audio_file(path, name).write_bytes(b"RIFF")
        writer.add_call(result, [AudioSource("audio", href(name))])
    writer.add_failure(*FAILURE, duration=12.0)
    writer.finish(BatchFigures(submitted=6, pending=1, cost_dollars=0.0123))
    return tmp_path / "site"


def page_of(site: Path, path: str) -> str:
    return (site / "calls" / f"{path}.html").read_text(encoding="utf-8")


def test_the_site_has_an_index_a_page_per_call_assets_and_data(site: Path):
    paths = [result.path for result in sample_results()]
    assert (site / "index.html").is_file()
    assert (site / "assets" / "review.css").is_file() and (site / "assets" / "review.js").is_file()
    for path in paths:
        assert (site / "calls" / f"{path}.html").is_file()
        assert (site / "calls" / path).read_bytes() == b"RIFF"  # the audio, beside its page
    assert sorted(p.name for p in (site / "data").iterdir()) == ["calls-0000.js", "text-0000.js"]
    chunk, rows = data_file(site / "data" / "calls-0000.js")
    assert chunk == 0 and [row["p"] for row in rows] == [*paths, FAILURE[0]]
    assert rows[-1] == {
        "p": FAILURE[0], "d": 12.0, "l": [], "s": [], "t": [], "c": [], "f": 1, "e": FAILURE[1],
    }  # fmt: skip
    stereo = rows[0]
    assert stereo["u"] == "calls/support/call-0001.wav.html" and stereo["f"] == 0
    assert stereo["s"] == ["agent", "customer"] and stereo["l"] == ["en"]
    assert stereo["c"] == ["connectivity", "long hold"] and stereo["i"] == 1
    assert rows[2]["s"] == [None] and rows[2]["i"] is None and rows[2]["l"] == ["en", "es"]
    assert rows[1]["r"] == 1  # the redacted call: one span
    _, texts = data_file(site / "data" / "text-0000.js")
    assert texts[0] == "Thank you for calling. My internet drops. Sorry, one moment. Let me check."
    assert texts[-1] == ""  # the failure
    body = Elements((site / "index.html").read_text(encoding="utf-8")).all("body")[0]
    assert body["data-page"] == "index" and body["data-chunks"] == "1"
    assert body["data-calls"] == "5" and body["data-chunk-rows"] == "1000"


def test_the_index_counts_charts_lists_and_filters(site: Path):
    index = (site / "index.html").read_text(encoding="utf-8")
    parsed = Elements(index)
    text = " ".join(" ".join(parsed.text).split())
    assert "4 calls done" in text and "1 failed" in text and "1 pending" in text
    assert "$0.0123 cost (estimate)" in text and "4 of 6 submitted file(s) done." in text
    captions = re.findall(r"<figcaption>([^<]+)", index)
    assert captions == [
        "Talk share: agent",
        "Talk share: customer",
        "Talk share: unlabelled",
        "Non-talk time (share of the call)",
        "Interruptions per call",
        "Call durations (s)",
    ]
    assert len(parsed.all("svg")) == 6 and "<img" not in index
    # the calls to listen to first: links to the moment
    links = [a["href"] for a in parsed.all("a")]
    assert "calls/support/call-0001.wav.html#t=5.00" in links
    # the filters offer what the calls have
    options = re.findall(r'<select id="filter-(\w+)"', index)
    assert options == ["status", "speaker", "language", "category"]
    assert '<option value="es">es</option>' in index
    assert '<option value="&quot;agent&quot;">agent</option>' in index
    assert '<option value="null">unlabelled</option>' in index
    assert '<option value="long hold">long hold</option>' in index
    # nothing from elsewhere: no absolute URL
    assert not re.search(r'(src|href)="(https?:)?//', index)


def test_everything_from_a_transcript_is_escaped(site: Path):
    """The hostile call's path, words, metadata and categories are text, never markup:
    the only script a page has is the site's own."""
    for page in [site / "index.html", *sorted((site / "calls").rglob("*.html"))]:
        html = page.read_text(encoding="utf-8")
        assert SCRIPT not in html, page
        scripts = Elements(html).all("script")
        assert len(scripts) == 1 and scripts[0]["src"].endswith("assets/review.js"), page
        assert "<b>" not in html
        assert not re.search(r"\son\w+=", html)  # no event handler attributes
    hostile = next((site / "calls" / "odd").rglob("*.html")).read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in hostile
    assert "&lt;b&gt;bold&lt;/b&gt;" in hostile and "&quot;quoted&#x27;" in hostile
    assert "&amp;amp;" in hostile  # the word "&amp;" as said, not an ampersand
    # its link in the index is percent-encoded: '#' would cut it short
    _, rows = data_file(site / "data" / "calls-0000.js")
    assert rows[3]["u"] == "calls/odd/%231%20%26%20%3Cscript%3Ealert%281%29%3C/script%3E.wav.html"
    # the Content-Security-Policy refuses inline scripts even if something slipped through
    assert "script-src 'self'" in hostile and "unsafe-inline" not in hostile


def test_a_redacted_call_shows_its_tags_and_never_what_was_removed(site: Path):
    html = page_of(site, "payments/call 0002.wav")
    assert CARD not in html and PATTERN not in html and "POL-" not in html
    assert '<span class="w tag" data-s="3.300" data-e="7.000">[CARD_NUMBER]</span>' in html
    assert "pci, policy (pattern)" in html  # the pattern's name only
    assert '<mark class="tag">[CARD_NUMBER]</mark>' in html  # in the list of redactions
    assert 'data-seek="3.300"' in html
    redacted_lane = re.search(r'lane-name redacted">redacted</span>(<svg.*?</svg>)', html)
    assert redacted_lane and "<title>[CARD_NUMBER] 0:03-0:07 (3.7 s)</title>" in redacted_lane[1]
    for path in [site / "index.html", *sorted((site / "data").iterdir())]:
        assert CARD not in path.read_text(encoding="utf-8")


def test_a_run_of_one_tag_shows_once(tmp_path: Path):
    """The worker stores each redacted word as the tag: a card number's words are one."""
    data = redacted_call().model_dump(mode="json")
    card = data["segments"][1]["words"]
    data["segments"][1]["words"] = [
        *card[:2],
        {**card[2], "end": 4.0},
        {**card[2], "start": 4.0, "end": 5.5},
        {**card[2], "start": 5.5},
    ]
    html = ReviewSite(tmp_path, BATCH).add_call(data).read_text(encoding="utf-8")
    assert html.count(">[CARD_NUMBER]</span>") == 1
    assert '<span class="w tag" data-s="3.300" data-e="7.000">[CARD_NUMBER]</span>' in html


def test_a_call_page_has_turns_words_with_times_and_a_timeline(site: Path):
    html = page_of(site, "support/call-0001.wav")
    parsed = Elements(html)
    assert parsed.all("body")[0] == {"data-page": "call", "data-duration": "10.000"}
    audio = parsed.all("audio")
    assert len(audio) == 1 and audio[0]["src"] == "call-0001.wav" and audio[0]["id"] == "player"
    assert [(t["data-s"], t["data-e"]) for t in parsed.all("li", "turn")] == [
        ("0.500", "2.900"),
        ("3.000", "5.000"),
        ("4.000", "8.500"),  # the agent cuts in, then goes on after a silence
    ]
    words = parsed.all("span", "w")
    assert len(words) == 13 and words[0] == {"class": "w", "data-s": "0.500", "data-e": "1.000"}
    # lanes: agent, customer, overlap, silence; the overlap 4.0-5.0 s of 10 s
    lanes = re.findall(r'<span class="lane-name [^"]*">([^<]+)</span>', html)
    assert lanes == ["agent", "customer", "overlap", "silence", "rules"]
    overlap = re.search(r'lane-name overlap">overlap</span>(<svg.*?</svg>)', html)[1]
    assert '<rect class="overlap" x="400.00" y="0" width="100.00"' in overlap
    silence = re.search(r'lane-name silence">silence</span>(<svg.*?</svg>)', html)[1]
    assert 'x="500.00" y="0" width="200.00"' in silence  # 5.0-7.0 s, the longest
    text = " ".join(" ".join(parsed.text).split())
    for shown in ("agent_id A-17", "queue billing", "tiny.en"):
        assert shown in text
    # the QA rules it matched, with their evidence: the phrase heard (a button to it), the
    # measure over its threshold; the phrase on the timeline's "rules" lane
    assert "connectivity 0:03 customer: “internet drops.”" in text
    assert "long hold longest_silence_over 2 (threshold 1.5)" in text
    assert 'data-seek="3.500"' in html
    rules = re.search(r'lane-name matched">rules</span>(<svg.*?</svg>)', html)[1]
    assert "<title>connectivity: internet drops. 0:03-0:05 (1.5 s)</title>" in rules
    assert "2.0 s at 0:05" in text  # the longest silence, a button that seeks there


def test_a_call_without_audio_says_why(tmp_path: Path):
    writer = ReviewSite(tmp_path, BATCH)
    page = writer.add_call(mono_call(), [], "No audio: the recording is gone.")
    html = page.read_text(encoding="utf-8")
    assert "<audio" not in html and "No audio: the recording is gone." in html
    assert '<span class="w seg" data-s="0.400" data-e="3.000">' in html  # segments, no words
    assert '<span class="lang" title="language">es</span>' in html


def test_two_sources_offer_a_switch(tmp_path: Path):
    writer = ReviewSite(tmp_path, BATCH)
    sources = [AudioSource("redacted audio", "a.redacted.wav"), AudioSource("original", "a")]
    html = writer.add_call(redacted_call(), sources, "The original holds it.").read_text()
    assert '<audio id="player" controls preload="metadata" src="a.redacted.wav">' in html
    assert '<button class="source on" type="button" data-src="a.redacted.wav">' in html
    assert '<button class="source" type="button" data-src="a">original</button>' in html


def test_results_of_any_version_are_read(tmp_path: Path):
    """No metrics (computed), categories as objects, extra fields ignored."""
    data = stereo_call().model_dump(mode="json")
    stored = ConversationMetrics.model_validate(data["metrics"])
    data = {k: v for k, v in data.items() if k != "metrics"}
    data["categories"] = [{"name": "refund", "matched": True}, {"name": "churn", "matched": False}]
    data["something_new"] = {"x": 1}
    assert CallView.model_validate(data).conversation() == stored
    writer = ReviewSite(tmp_path, BATCH)
    writer.add_call(data)
    writer.finish()
    _, rows = data_file(tmp_path / "data" / "calls-0000.js")
    assert rows[0]["c"] == ["refund"]
    assert category_names({"a": True, "b": 0}) == ["a"]
    assert category_names([{"rule": "x", "evidence": []}, {"name": "y"}]) == ["x", "y"]
    assert category_names(["x", None, "x"]) == ["x"] and category_names("odd") == []


def test_paths_that_would_leave_the_site_are_refused(tmp_path: Path):
    writer = ReviewSite(tmp_path / "site", BATCH)
    data = stereo_call().model_dump(mode="json")
    for bad in ("../escape.wav", "/etc/passwd.wav", "a/../../b.wav"):
        with pytest.raises(WhisperqError):
            writer.add_call({**data, "path": bad})
    with pytest.raises(WhisperqError):
        writer.audio_file("a.wav", "../b.wav")
    assert not (tmp_path / "escape.wav.html").exists()


def test_large_batches_are_written_in_chunks_and_stale_ones_removed(tmp_path: Path):
    writer = ReviewSite(tmp_path, "big", chunk_rows=10)
    for i in range(25):
        writer.add_call(synthetic_result(i, "big"))
    writer.finish()
    names = sorted(p.name for p in (tmp_path / "data").iterdir())
    assert names == [f"{kind}-000{n}.js" for kind in ("calls", "text") for n in range(3)]
    assert [len(data_file(tmp_path / "data" / f"calls-000{n}.js")[1]) for n in range(3)] == [
        10,
        10,
        5,
    ]
    again = ReviewSite(tmp_path, "big", chunk_rows=10)
    again.add_call(synthetic_result(0, "big"))
    again.finish()
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [
        "calls-0000.js",
        "text-0000.js",
    ]


@pytest.mark.parametrize("top", [0, 1, 3, 50])
def test_the_streaming_tally_is_batch_conversation(top: int):
    """Totals and top lists kept one call at a time equal the report's (ties by path)."""
    calls = []
    for i in range(300):
        data = synthetic_result(i)
        calls.append((data["path"], ConversationMetrics.model_validate(data["metrics"])))
    calls += [(r.path, r.metrics) for r in (redacted_call(), mono_call())]
    tally = _Tally(top)
    for path, metrics in calls:
        tally.add(path, metrics)
    assert tally.summary() == batch_conversation(calls, top)


def test_turns_join_a_speaker_s_segments_in_order_of_start():
    view = CallView.model_validate(stereo_call().model_dump(mode="json"))
    assert [(t.speaker, t.start, len(t.segments)) for t in turns(view.segments)] == [
        ("agent", 0.5, 1),
        ("customer", 3.0, 1),
        ("agent", 4.0, 2),
    ]


def test_chart_bins():
    assert nice_step(95) == 10 and nice_step(0.7) == 0.1 and nice_step(0) == 1
    assert share_bins([0.0, 0.05, 0.1, 0.99, 1.0]) == [
        ("0%", 2), ("10%", 1), ("20%", 0), ("30%", 0), ("40%", 0),
        ("50%", 0), ("60%", 0), ("70%", 0), ("80%", 0), ("90%", 2),
    ]  # fmt: skip
    assert seconds_bins([30, 95, 170]) == ([
        ("0-20", 0), ("20-40", 1), ("40-60", 0), ("60-80", 0), ("80-100", 1),
        ("100-120", 0), ("120-140", 0), ("140-160", 0), ("160-180", 1),
    ], "s")  # fmt: skip
    minutes, unit = seconds_bins([600, 3000])
    assert unit == "min" and minutes[0] == ("0-5", 0) and len(minutes) == 10
    assert count_bins([0, 0, 1, 7, 12]) == [
        ("0", 2), ("1", 1), ("2", 0), ("3", 0), ("4", 0), ("5-9", 1), ("10+", 1),
    ]  # fmt: skip


def test_the_assets_are_package_data():
    """pyproject.toml ships them: an installed whisperq writes the same site."""
    from importlib import resources

    folder = resources.files("whisperq.transcripts") / "review_assets"
    assert {"review.css", "review.js"} <= {item.name for item in folder.iterdir()}
    text = Path(__file__).parents[2].joinpath("pyproject.toml").read_text(encoding="utf-8")
    assert '"transcripts/review_assets/*"' in text

"""The review site in a real browser: headless Chromium (Debian's ``chromium``; `make
system-deps` installs it), driven over the DevTools protocol (tests/chromium.py), pages
opened from disk (file://) as a reviewer would.

Every test here is marked ``browser`` (`pytest -m browser` runs them alone). The run
writes a screenshot of each page type into ``build/review-screenshots/`` (or
``$WHISPERQ_REVIEW_SCREENSHOTS``) and prints where.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from chromium import INSTALL_HINT, Chromium, Page, find_chromium
from review_samples import (
    BATCH,
    CARD,
    FAILURE,
    PATTERN,
    SCRIPT,
    sample_results,
    synthetic_result,
    write_wav,
)

from whisperq.cli.review import audio_plan, redacted
from whisperq.transcripts.review_call import AudioSource
from whisperq.transcripts.review_html import href
from whisperq.transcripts.review_site import BatchFigures, ReviewSite

pytestmark = pytest.mark.browser
# build/ is ignored by git; the screenshots stay after the run (docs/images/ has copies)
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "review-screenshots"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    executable = find_chromium()
    if executable is None:
        pytest.fail(INSTALL_HINT)
    log = tmp_path_factory.mktemp("chromium") / "chromium.log"
    with Chromium(executable, log) as chromium:
        yield chromium


@pytest.fixture
def page(browser: Chromium) -> Iterator[Page]:
    tab = browser.page()
    try:
        yield tab
    finally:
        tab.close()


@pytest.fixture(scope="module")
def screenshots() -> Path:
    chosen = os.environ.get("WHISPERQ_REVIEW_SCREENSHOTS")
    folder = Path(chosen) if chosen else SCREENSHOTS
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample calls, each with the audio its batch would give it (a redacted call:
    its redacted copy only), and a failure."""
    out = tmp_path_factory.mktemp("review") / "site"
    writer = ReviewSite(out, BATCH, top=5)
    for result in sample_results():
        data = result.model_dump(mode="json")
        path, name = data["path"], data["path"].rsplit("/", 1)[-1]
        was_redacted = redacted(data, batch_redacts=False)
        plan, note = audio_plan(was_redacted, was_redacted, True, include_original=False)
        sources = []
        for kind, label in plan:
            file_name = f"{name}.redacted.wav" if kind == "redacted" else name
            write_wav(writer.audio_file(path, file_name), data["duration"])
            sources.append(AudioSource(label, href(file_name)))
        writer.add_call(result, sources, note)
    writer.add_failure(*FAILURE, duration=12.0)
    writer.finish(BatchFigures(submitted=6, pending=1, cost_dollars=0.0123))
    return out


def url(path: Path) -> str:
    return "file://" + quote(str(path))


def call_url(site: Path, path: str) -> str:
    return url(site / "calls" / f"{path}.html")


def open_page(page: Page, address: str) -> None:
    page.navigate(address)
    page.wait_for("document.body.dataset.ready === '1'")


def search(page: Page, text: str) -> int:
    """Type ``text`` into the search box (replacing what is there); the calls shown once
    the table is filtered by it, the transcripts' text loaded."""
    page.evaluate("document.getElementById('search').value = ''")
    page.type("#search", text)
    query = " ".join(text.lower().split())
    page.wait_for(
        f"document.body.dataset.query === {json.dumps(query)}"
        " && document.body.dataset.searched === 'yes'"
    )
    return int(page.evaluate("document.body.dataset.shown"))


def table_paths(page: Page) -> list[str]:
    return page.evaluate(
        "Array.from(document.querySelectorAll('#calls tbody tr td.path')).map(td => td.textContent)"
    )


def test_the_index_lists_every_call_and_search_and_filters_narrow_it(
    page: Page, site: Path, screenshots: Path
):
    open_page(page, url(site / "index.html"))
    page.wait_for("document.body.dataset.loaded === 'all'")
    every = sorted(result.path for result in sample_results())
    assert sorted(table_paths(page)) == sorted([*every, FAILURE[0]])
    assert page.evaluate("document.querySelectorAll('.chart svg rect.bar').length") > 0

    assert search(page, "internet") == 1  # words said: the transcripts' text is searched
    assert table_paths(page) == ["support/call-0001.wav"]
    assert search(page, "THANK you") == 2  # every word, any case
    assert search(page, "billing/") == 1  # a file name
    assert search(page, SCRIPT) == 1  # typed as text, found as text
    assert table_paths(page) == [next(p for p in every if p.startswith("odd/"))]
    assert search(page, "nobody said this") == 0
    assert search(page, " ") == 5
    select = "(name, value) => { const s = document.getElementById('filter-' + name);"
    select += " s.value = value; s.dispatchEvent(new Event('change')); }"
    page.evaluate(f"({select})('status', 'failed')")
    assert table_paths(page) == [FAILURE[0]]
    page.evaluate(f"({select})('status', '')")
    page.evaluate(f"({select})('speaker', 'null')")  # the mono call has no labels
    assert table_paths(page) == ["billing/mono.wav"]
    page.evaluate(f"({select})('speaker', '')")
    page.evaluate(f"({select})('category', 'connectivity')")
    assert table_paths(page) == ["support/call-0001.wav"]
    page.evaluate(f"({select})('category', '')")
    page.evaluate(f"({select})('language', 'es')")
    assert table_paths(page) == ["billing/mono.wav"]
    page.evaluate(f"({select})('language', '')")

    page.click("#calls thead th[data-key='d'] button")  # shortest first
    assert table_paths(page)[0] == next(p for p in every if p.startswith("odd/"))
    page.click("#calls thead th[data-key='d'] button")  # longest first
    assert table_paths(page)[0] == FAILURE[0]
    page.click("#calls thead th[data-key='p'] button")

    page.pump(0.3)
    assert page.errors == []
    page.evaluate("window.scrollTo(0, 0)")
    shot = page.screenshot(screenshots / "review-index.png", full_page=True)
    print(f"\nscreenshot: {shot}")


def test_a_call_page_plays_seeks_and_highlights_the_word_being_said(
    page: Page, site: Path, screenshots: Path
):
    open_page(page, call_url(site, "support/call-0001.wav"))
    page.wait_for("document.getElementById('player').readyState >= 1")  # the WAV is read
    assert page.evaluate("document.getElementById('player').duration") == pytest.approx(10, 0.01)

    page.click("#turn-1 .who")  # the customer's turn: 3.0 s
    assert page.evaluate("document.getElementById('player').currentTime") == pytest.approx(3.0)
    assert page.evaluate("document.querySelector('.turn.current').id") == "turn-1"
    # the turn's button keeps the focus: space plays and pauses, and does not click it
    page.evaluate("document.getElementById('player').currentTime = 3.5")
    assert page.evaluate("document.activeElement.className") == "who"
    page.key(" ", "Space", 32)
    page.wait_for("!document.getElementById('player').paused")
    page.key(" ", "Space", 32)
    page.wait_for("document.getElementById('player').paused")
    assert page.evaluate("document.getElementById('player').currentTime") >= 3.5

    def said_at(seconds: float) -> list[str]:
        return page.evaluate(
            f"(() => {{ const p = document.getElementById('player'); p.currentTime = {seconds};"
            " p.dispatchEvent(new Event('timeupdate'));"
            " return Array.from(document.querySelectorAll('.w.now')).map(w => w.textContent)"
            ".sort(); })()"
        )

    assert said_at(3.6) == ["internet"]
    assert said_at(4.5) == ["Sorry,", "drops."]  # both speak: both words lit
    assert said_at(6.0) == []  # the silence
    assert said_at(8.2) == ["check."]
    assert page.evaluate("document.querySelector('.turn.current').id") == "turn-2"

    page.click("#transcript .w[data-s='1.400']")  # "for"
    assert page.evaluate("document.getElementById('player').currentTime") == pytest.approx(1.4)
    assert page.evaluate("Array.from(document.querySelectorAll('.w.now'), w => w.textContent)") == [
        "for"
    ]

    page.key("ArrowRight", "ArrowRight", 39)  # next turn
    assert page.evaluate("document.getElementById('player').currentTime") == pytest.approx(3.0)
    page.key("ArrowRight", "ArrowRight", 39)
    assert page.evaluate("document.getElementById('player').currentTime") == pytest.approx(4.0)
    page.key("ArrowLeft", "ArrowLeft", 37)  # just started this turn: the one before
    assert page.evaluate("document.getElementById('player').currentTime") == pytest.approx(3.0)

    page.key(" ", "Space", 32)  # plays (headless Chromium plays muted)
    page.wait_for("!document.getElementById('player').paused")
    page.key(" ", "Space", 32)
    page.wait_for("document.getElementById('player').paused")
    page.evaluate("document.getElementById('player').currentTime = 3.6")  # a word lit
    page.wait_for("document.querySelectorAll('.w.now').length === 1")

    page.pump(0.3)
    assert page.errors == []
    shot = page.screenshot(screenshots / "review-call.png")
    print(f"\nscreenshot: {shot}")


def test_a_redacted_call_page_holds_no_redacted_value(page: Page, site: Path):
    open_page(page, call_url(site, "payments/call 0002.wav"))
    page.wait_for("document.getElementById('player').readyState >= 1")
    html = page.evaluate("document.documentElement.outerHTML")
    text = page.evaluate("document.body.innerText")
    for value in (CARD, "4532", PATTERN, "POL-"):
        assert value not in html and value not in text
    assert "[CARD_NUMBER]" in text
    audio = page.evaluate("document.getElementById('player').currentSrc")
    assert audio.endswith("/payments/call%200002.wav.redacted.wav")
    assert not (site / "calls" / "payments" / "call 0002.wav").exists()  # no original copy
    assert page.evaluate("document.querySelectorAll('.sources').length") == 0
    page.click("#redactions button[data-seek]")  # the tag's span, on the timeline too
    assert page.evaluate("document.getElementById('player').currentTime") == pytest.approx(3.3)
    assert page.evaluate("Array.from(document.querySelectorAll('.w.now'), w => w.textContent)") == [
        "[CARD_NUMBER]"
    ]
    assert page.errors == []


def test_a_10000_call_index_opens_with_its_first_page(
    page: Page, tmp_path: Path, screenshots: Path
):
    """Generated streaming (a page per call); the index shows its first page as soon as
    the first data file is in, the rest loads behind. The time is printed, never
    asserted (benchmarks/review_site.py measures it)."""
    calls = 10_000
    writer = ReviewSite(tmp_path / "site", "big")
    started = time.perf_counter()
    for i in range(calls):
        writer.add_call(synthetic_result(i, "big"))
    index = writer.finish()
    written = time.perf_counter() - started
    open_page(page, url(index))
    first = page.evaluate("window.WQ.firstPageMs")
    assert page.evaluate("document.querySelectorAll('#calls tbody tr').length") == 50
    assert page.evaluate("document.getElementById('page-no').textContent").startswith("page 1 of")
    page.wait_for("document.body.dataset.loaded === 'all'", timeout=60)
    every = page.evaluate("window.WQ.allRowsMs")
    assert page.evaluate("document.getElementById('page-no').textContent") == "page 1 of 200"
    page.click("#next")
    assert table_paths(page)[0] == "day-0/call-00350.wav"  # by path: the 51st
    assert page.errors == []
    print(
        f"\n{calls} calls: site written in {written:.1f} s; first page shown "
        f"{first:.0f} ms after navigation, all rows {every:.0f} ms"
    )

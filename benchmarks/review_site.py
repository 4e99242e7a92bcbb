"""The review site of a large batch (issue 32): how long writing it takes, that memory stays
flat as the batch grows, and how fast headless Chromium opens its index from disk.

    .venv/bin/python benchmarks/review_site.py                # 1,000 and 10,000 calls
    .venv/bin/python benchmarks/review_site.py --calls 2000   # one size
    .venv/bin/python benchmarks/review_site.py --keep DIR     # keep the largest site there
    .venv/bin/python benchmarks/review_site.py --quick        # 200 calls, 2 tries (a test runs it)

**Calls** are synthetic result JSONs (``tests/review_samples.py``, ``synthetic_result``):
two speakers taking 2-12 turns over 30-600 s, words with times, stored metrics, three
languages, four categories. No audio (the site's size and speed are the pages').

**Writing**: ``ReviewSite.add_call`` per result, then ``finish``, each size in a process
of its own; its peak RSS (``ru_maxrss``) and wall time. Generating the results is timed
apart and left out.

**Opening**: Chromium (``tests/chromium.py``), a fresh tab per try, the index opened as
``file://``; from the navigation's start (``performance.now()`` in the page): the first
table page drawn (``WQ.firstPageMs``), every row loaded (``WQ.allRowsMs``), the load event.
Then the first search over the transcripts' text (which loads the text files), typed once
every row is in. Median of ``--tries``. Times in the page, not asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))

from chromium import INSTALL_HINT, Chromium, find_chromium  # noqa: E402
from review_samples import synthetic_result  # noqa: E402

from whisperq.transcripts.review_site import ReviewSite  # noqa: E402


def write(calls: int, out: Path) -> dict[str, float]:
    """Write the site of ``calls`` synthetic results (in this process)."""
    generating = 0.0
    started = time.perf_counter()
    site = ReviewSite(out, "bench")
    for i in range(calls):
        before = time.perf_counter()
        result = synthetic_result(i, "bench")
        generating += time.perf_counter() - before
        site.add_call(result)
    site.finish()
    total = time.perf_counter() - started
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {
        "calls": calls,
        "write_s": round(total - generating, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "site_mb": round(size / 1e6, 1),
        "index_kb": round((out / "index.html").stat().st_size / 1e3, 1),
        "data_files": len(list((out / "data").iterdir())),
    }


def write_apart(calls: int, out: Path) -> dict[str, float]:
    """``write`` in a process of its own: its own peak RSS."""
    done = subprocess.run(
        [sys.executable, __file__, "--write-only", str(calls), "--keep", str(out)],
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def open_index(index: Path, tries: int) -> dict[str, float]:
    executable = find_chromium()
    if executable is None:
        raise SystemExit(INSTALL_HINT)
    first, every, loaded, search = [], [], [], []
    with Chromium(executable, index.parent / "chromium.log") as browser:
        for _ in range(tries):
            page = browser.page()
            try:
                page.navigate("file://" + quote(str(index)), timeout=120)
                page.wait_for("document.body.dataset.ready === '1'", timeout=120)
                page.wait_for("document.body.dataset.loaded === 'all'", timeout=120)
                first.append(page.evaluate("WQ.firstPageMs"))
                every.append(page.evaluate("WQ.allRowsMs"))
                loaded.append(
                    page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd")
                )
                started = page.evaluate("performance.now()")
                page.type("#search", "outage internet")
                page.wait_for(
                    "document.body.dataset.query === 'outage internet'"
                    " && document.body.dataset.searched === 'yes'",
                    timeout=120,
                )
                search.append(page.evaluate("performance.now()") - started)
                if page.errors:
                    raise SystemExit(f"errors in the page: {page.errors}")
            finally:
                page.close()
    return {
        "first_page_ms": round(statistics.median(first)),
        "all_rows_ms": round(statistics.median(every)),
        "load_event_ms": round(statistics.median(loaded)),
        "first_search_ms": round(statistics.median(search)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, action="append", help="(repeatable)")
    parser.add_argument("--tries", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="write the (largest) site here")
    parser.add_argument("--quick", action="store_true", help="200 calls, 2 tries")
    parser.add_argument("--write-only", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.calls, args.tries = args.calls or [200], 2
    if args.write_only:
        print(json.dumps(write(args.write_only, args.keep)))
        return
    sizes = sorted(args.calls or [1000, 10_000])
    work = Path(tempfile.mkdtemp(prefix="review-bench-"))
    rows = []
    try:
        for calls in sizes:
            out = args.keep if (args.keep and calls == sizes[-1]) else work / str(calls)
            if out.exists():
                shutil.rmtree(out)
            row = write_apart(calls, out)
            row.update(open_index(out / "index.html", args.tries))
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    columns = list(rows[0])
    print()
    print("| " + " | ".join(columns) + " |")
    print("| " + " | ".join("---:" for _ in columns) + " |")
    for row in rows:
        print("| " + " | ".join(f"{row[c]:,}" for c in columns) + " |")


if __name__ == "__main__":
    main()

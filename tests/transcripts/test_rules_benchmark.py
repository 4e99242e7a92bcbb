"""benchmarks/rules.py runs end to end in its quick mode (tiny.en, two synthetic calls)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_rules_benchmark_reports_precision_recall_and_time():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "rules.py"), "--quick", "--calls", "2"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = done.stdout
    assert "precision" in report and "recall" in report
    total = re.search(r"^all\s+(\d+)\s+(\d+)\s+(\d+)", report, re.M)
    assert total is not None
    true_calls, found, right = map(int, total.groups())
    assert true_calls > 0 and right <= min(found, true_calls)
    assert re.search(r"applying 9 rules to 1,000 calls: [\d.]+ s", report)

"""The ``browser`` marker here too: benchmarks/review_site.py's quick mode drives Chromium."""

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "browser: drives headless Chromium (`make system-deps` installs it)"
    )

"""The ``browser`` marker: tests that drive headless Chromium (test_review_browser.py)."""

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "browser: drives headless Chromium (`make system-deps` installs it)"
    )

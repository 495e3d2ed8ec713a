"""Whether a real-browser test can run here, and what it means when it cannot.

A browser test needs Debian's /usr/bin/chromium and Python's playwright (tests/browser_setup.sh installs
both). Where they are missing the test is skipped on a person's machine, but FAILS in CI (CI=true, as
GitHub Actions and most CI services set it): a CI run that skipped every browser test would pass
without ever checking what people see.
"""

import os

import pytest

CHROMIUM = "/usr/bin/chromium"


def missing() -> str | None:
    """Why no browser test can run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (run tests/browser_setup.sh)"
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} is missing (run tests/browser_setup.sh)"
    return None


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require_browser() -> None:
    """Skip the calling test (or fixture) when the browser is missing; fail it in CI."""
    why = missing()
    if why is None:
        return
    if in_ci():
        pytest.fail(f"CI=true but {why}", pytrace=False)
    pytest.skip(why)

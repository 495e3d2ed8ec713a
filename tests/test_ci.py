"""What CI relies on: a missing browser fails the browser tests there instead of skipping them silently."""

import pytest

import conftest


def test_a_missing_browser_fails_in_ci_and_skips_elsewhere(monkeypatch):
    monkeypatch.setattr(conftest, "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="/nonexistent/chromium missing"):
        conftest.require_browser()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="/nonexistent/chromium missing"):
        conftest.require_browser()

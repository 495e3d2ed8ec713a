"""Take README's picture: the top of a run's report.html, as Chromium renders it.

    .venv/bin/python docs/screenshot_report.py runs/seeds/seed-0 docs/report.png

Drives Debian's chromium through playwright as the browser tests do (tests/browser_setup.sh installs
both; nothing is downloaded). The report is a file on disk, opened offline.
"""
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main(run: str, out: str, width: int = 1100, height: int = 1400) -> None:
    report = Path(run, "report.html").resolve()
    if not report.exists():
        raise SystemExit(f"{report} does not exist: write it first (labkit report --name <run> --runs-dir <dir>)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto(report.as_uri())
        page.wait_for_load_state("networkidle")
        page.wait_for_timeout(1500)  # plotly draws after load
        page.screenshot(path=out, clip={"x": 0, "y": 0, "width": width, "height": height})
        browser.close()
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:3])

"""Debian's chromium, headless, driven by Selenium through the system chromedriver (no browser download).

Used by the browser tests (tests/test_inspect_browser.py) and scripts/bench_inspect.py. ``missing()`` says
why no browser can start here (None when one can); ``start()`` returns a WebDriver with a fresh profile.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not Path(path).exists():
            return f"{path} is not installed (apt-get install -y {package})"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    return None


class Browser:
    """A headless chromium with its own throw-away profile folder; a context manager."""

    def __init__(self, width: int = 1280, height: int = 2000):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for flag in (*FLAGS, f"--user-data-dir={self.profile}", f"--window-size={width},{height}"):
            opts.add_argument(flag)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)

    def console(self) -> list[dict]:
        """The browser console's entries since the last call."""
        return self.driver.get_log("browser")

    def errors(self) -> list[str]:
        return [e["message"] for e in self.console() if e["level"] == "SEVERE"]

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def load_seconds(driver) -> float:
    """Navigation start to the load event of the current page, from the browser's own timing (seconds)."""
    t = driver.execute_script(
        "const n = performance.getEntriesByType('navigation')[0]; return [n.startTime, n.loadEventEnd];"
    )
    return (t[1] - t[0]) / 1000.0

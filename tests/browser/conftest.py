"""A real headless Chromium, driven by Selenium through Debian's chromedriver.

Nothing is downloaded: the browser and its driver come from the system (``apt-get install
-y chromium chromium-driver``, which .ci/run does); where either is missing the tests skip
and say how to get them. ``CHROMIUM`` and ``CHROMEDRIVER`` point at other binaries.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HOW = "apt-get install -y chromium chromium-driver (as .ci/run does)"
# The flags a sandboxed CI machine needs, and none that reach out to the network.
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                  "--window-size=1280,1000")
SHOTS = Path(__file__).resolve().parents[2] / "out" / "browser"


def _first(*candidates: str | None) -> str | None:
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium (Selenium WebDriver); skips with the reason when none starts."""
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed: run `make install`")
    binary = _first(os.environ.get("CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser",
                    shutil.which("chromium") or None)
    driver_path = _first(os.environ.get("CHROMEDRIVER"), "/usr/bin/chromedriver",
                         shutil.which("chromedriver") or None)
    if binary is None or driver_path is None:
        pytest.skip(f"no {'chromium' if binary is None else 'chromedriver'} here: {HOW}")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(executable_path=driver_path),
                                  options=options)
    except WebDriverException as exc:
        pytest.skip(f"chromium does not start here ({exc.msg}): {HOW}")
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()

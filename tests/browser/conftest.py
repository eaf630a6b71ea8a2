"""A real headless Chromium, driven by Selenium through Debian's chromedriver.

Nothing is downloaded: the browser and its driver come from the system (``apt-get install
-y chromium chromium-driver``, which .ci/run does); where either is missing the tests skip
and say how to get them. ``CHROMIUM`` and ``CHROMEDRIVER`` point at other binaries.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.browser import CHROMIUM_FLAGS, HOW, SHOTS, first_file


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium (Selenium WebDriver); skips with the reason when none starts."""
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed: run `make install`")
    binary = first_file(os.environ.get("CHROMIUM"), "/usr/bin/chromium",
                        "/usr/bin/chromium-browser", shutil.which("chromium") or None)
    driver_path = first_file(os.environ.get("CHROMEDRIVER"), "/usr/bin/chromedriver",
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

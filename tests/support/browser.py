"""What the browser tests need to find and start Debian's Chromium, and where shots go."""

from __future__ import annotations

from pathlib import Path

HOW = "apt-get install -y chromium chromium-driver (as .ci/run does)"
# The flags a sandboxed CI machine needs, and none that reach out to the network.
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                  "--window-size=1280,1000")
SHOTS = Path(__file__).resolve().parents[2] / "out" / "browser"


def first_file(*candidates: str | None) -> str | None:
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    return None

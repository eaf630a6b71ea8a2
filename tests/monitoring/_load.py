"""A steady load on the real server: a fixed number of clients, each with one request
in flight at a time (a closed loop), plus a trickle of requests a client got wrong.

With ``clients`` requests always in flight and one image per request, the number of
images the server holds is fixed by the load, which is what lets the autoscaling test
say in advance what the queue-depth query must answer.
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
from dataclasses import dataclass, field


def picture(seed: int = 0, side: int = 160) -> bytes:
    """A small PNG with a few filled shapes (what the demo detector was trained on)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (side, side), (235, 235, 235))
    draw = ImageDraw.Draw(image)
    offset = 7 * seed % 40
    draw.ellipse((10 + offset, 10, 60 + offset, 60), fill=(200, 30, 30))
    draw.rectangle((80, 70 + offset // 2, 140, 130), fill=(30, 30, 200))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@dataclass
class LoadStats:
    """What the load did (read after :meth:`Load.stop`)."""

    ok: int = 0
    refused: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


class Load:
    """``clients`` closed-loop clients on V1 raw PNG, in a background event loop."""

    def __init__(self, url: str, model: str, clients: int, *, bad_every_s: float = 0.5) -> None:
        self.url = f"{url}/v1/models/{model}:predict"
        self.clients = clients
        self.bad_every_s = bad_every_s
        self.stats = LoadStats()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()),
                                        name="load", daemon=True)
        self._bodies = [picture(i) for i in range(8)]

    def start(self) -> Load:
        self._thread.start()
        return self

    def stop(self) -> LoadStats:
        self._stop.set()
        self._thread.join(60)
        return self.stats

    async def _main(self) -> None:
        import httpx

        limits = httpx.Limits(max_connections=self.clients + 2)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            tasks = [asyncio.create_task(self._client(client, i)) for i in range(self.clients)]
            tasks.append(asyncio.create_task(self._mistakes(client)))
            while not self._stop.is_set():
                await asyncio.sleep(0.05)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _client(self, client: object, index: int) -> None:
        import httpx

        assert isinstance(client, httpx.AsyncClient)
        headers = {"content-type": "image/png"}
        n = index
        while not self._stop.is_set():
            body = self._bodies[n % len(self._bodies)]
            n += 1
            try:
                r = await client.post(self.url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                self.stats.errors.append(repr(exc))
                await asyncio.sleep(0.1)
                continue
            if r.status_code == 200:
                self.stats.ok += 1
            else:
                self.stats.refused[r.status_code] = self.stats.refused.get(r.status_code, 0) + 1

    async def _mistakes(self, client: object) -> None:
        """Not a picture: the server refuses it (400, counted as reason "invalid")."""
        import httpx

        assert isinstance(client, httpx.AsyncClient)
        while not self._stop.is_set():
            try:
                r = await client.post(self.url, content=b"not a picture",
                                      headers={"content-type": "image/png"})
                self.stats.refused[r.status_code] = self.stats.refused.get(r.status_code, 0) + 1
            except httpx.HTTPError as exc:
                self.stats.errors.append(repr(exc))
            await asyncio.sleep(self.bad_every_s)


def wait_until(predicate: object, timeout: float, step: float = 0.2) -> bool:
    """Polls ``predicate()`` until it is true or ``timeout`` seconds pass."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())

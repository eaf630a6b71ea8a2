"""The product's web backend: a page and an API in front of the inference service.

The model lives in its own inference service; this small ASGI app is its *client*, as a
product's backend would be. It serves one page (drop pictures, see their boxes),
``POST /api/detect``, and the DeepStack / CodeProject.AI detection API that NVRs and
home-automation systems call (``POST /v1/vision/detection``), and reaches the service
only through :class:`~client.AsyncDetectionClient`, by the client's public API. When the
service is down, overloaded or slow the app answers a clear error and keeps serving; its
own liveness never depends on it.

Needs the ``web`` extra (``pip install 'kserve-detector[web]'``: Starlette, uvicorn,
python-multipart, prometheus-client). Start it with
``python -m client.web --url http://127.0.0.1:8080 --port 8000``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .settings import WebSettings

if TYPE_CHECKING:
    from .app import create_app

__all__ = ["WebSettings", "create_app"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so `python -m client.web` can say which extra is missing.
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

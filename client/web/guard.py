"""Who may call, and how many pictures at once: the API key and the in-flight cap.

The key is compared in constant time (:func:`hmac.compare_digest` on the UTF-8 bytes), so
the time an answer takes says nothing about how much of a guess was right. Callers send
it as DeepStack clients do, in the ``api_key`` form field, or as
``Authorization: Bearer <key>``.

The cap counts pictures from the moment a request is taken on until its answer is
written, retries and their waits included. A request that would pass it is refused at
once (503 + ``Retry-After``) rather than queued: the inference service has its own queue,
and a caller such as an NVR would rather drop a frame than wait behind a pile-up.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from .errors import ApiError

__all__ = ["IN_FLIGHT_RETRY_AFTER", "InFlight", "KeyCheck"]

#: Seconds a refused caller is asked to wait: pictures leave the backend in well under
#: a second on any working service.
IN_FLIGHT_RETRY_AFTER = 1


class KeyCheck:
    """Checks the API key a request carries; does nothing when the backend has none.

    Args:
        key: The key (None: every request passes).
    """

    def __init__(self, key: str | None) -> None:
        self._key = key.encode("utf-8") if key is not None else None

    @property
    def enabled(self) -> bool:
        """Whether requests need a key."""
        return self._key is not None

    def check(self, headers: Mapping[str, str], form_key: str | None) -> None:
        """Passes when the key is not needed, or the request carries the right one.

        Args:
            headers: The request's headers (``Authorization: Bearer <key>``).
            form_key: The ``api_key`` form field, if the request had one.

        Raises:
            ApiError: 401 with ``WWW-Authenticate: Bearer`` when the key is missing or wrong.
        """
        if self._key is None:
            return
        given = form_key
        if given is None:
            scheme, _, token = headers.get("authorization", "").partition(" ")
            given = token.strip() if scheme.lower() == "bearer" else None
        challenge = {"WWW-Authenticate": "Bearer"}
        if not given:
            raise ApiError(401, "this backend needs an API key: send it in the 'api_key' form "
                                "field or as 'Authorization: Bearer <key>'", challenge)
        if not hmac.compare_digest(given.encode("utf-8"), self._key):
            raise ApiError(401, "incorrect API key", challenge)


class InFlight:
    """Counts the pictures the backend holds and refuses what would pass ``limit``.

    Only the event loop's thread touches it, so a plain integer is enough.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    def take(self, pictures: int) -> None:
        """Takes ``pictures`` places; call :meth:`give_back` with the same number after.

        Raises:
            ApiError: 503 with ``Retry-After`` when the places are not free.
        """
        if self.count + pictures > self.limit:
            raise ApiError(503, f"the backend is at its limit of {self.limit} pictures in "
                                f"flight (--max-in-flight); try again in "
                                f"{IN_FLIGHT_RETRY_AFTER} s",
                           {"Retry-After": str(IN_FLIGHT_RETRY_AFTER)})
        self.count += pictures

    def give_back(self, pictures: int) -> None:
        """Frees places taken by :meth:`take`."""
        self.count = max(0, self.count - pictures)

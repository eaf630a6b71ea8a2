"""The models a server has: its V2 model-repository index, or else KServe's model list.

No I/O here: the requests to send and how to read their answers. ``POST
/v2/repository/index`` is the V2 model repository extension's call (Triton's
``docs/protocol/extension_model_repository.md``: ``[{name, version, state, reason}]``),
which this project's server answers with every model folder, loaded or not. A server
without it (plain KServe) answers 404 there; ``GET /v2/models`` (KServe's
``{"models": [names]}``) then lists the loaded ones. Over REST whatever the client's
protocol: KServe's gRPC proto has no index call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from ._exceptions import ServerError
from ._http import HttpAnswer, HttpRequest, error_for_status, parse_json

__all__ = ["ModelEntry", "list_models", "list_models_async"]

_JSON = {"content-type": "application/json", "accept": "application/json"}
INDEX = HttpRequest("POST", "/v2/repository/index", _JSON, b"{}")
MODELS = HttpRequest("GET", "/v2/models", {"accept": "application/json"})


@dataclass(frozen=True)
class ModelEntry:
    """One model of the server.

    Attributes:
        name: The name requests use (``DetectionClient(model=name)``).
        version: Its version, when loaded and known.
        state: ``READY``, ``LOADING`` or ``UNAVAILABLE`` (Triton's states).
        reason: Why it is not ready (``not loaded``, or its load error).
    """

    name: str
    version: str = ""
    state: str = "READY"
    reason: str = ""

    @property
    def ready(self) -> bool:
        """Whether it takes requests now."""
        return self.state.upper() == "READY"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def _failed(answer: HttpAnswer, what: str) -> Exception:
    return error_for_status(answer.status, answer.headers, answer.content, what=what,
                            model="(any)")


def _read_index(answer: HttpAnswer) -> list[ModelEntry]:
    if answer.status != 200:
        raise _failed(answer, "list models")
    body = parse_json(answer.content, "the repository index")
    if not isinstance(body, list) or not all(isinstance(e, dict) and "name" in e for e in body):
        raise ServerError("the repository index is not a list of {name, state...} objects")
    return [ModelEntry(str(e["name"]), str(e.get("version") or ""),
                       str(e.get("state") or ""), str(e.get("reason") or "")) for e in body]


def _read_models(answer: HttpAnswer) -> list[ModelEntry]:
    if answer.status != 200:
        raise _failed(answer, "list models")
    body = parse_json(answer.content, "the model list")
    names = body.get("models") if isinstance(body, dict) else None
    if not isinstance(names, list):
        raise ServerError('the model list is not {"models": [names]}')
    return [ModelEntry(str(name)) for name in names]


def _no_index(answer: HttpAnswer) -> bool:
    return answer.status in (404, 405)


def list_models(send: Callable[[HttpRequest], HttpAnswer]) -> list[ModelEntry]:
    """The server's models, with ``send`` doing the I/O."""
    answer = send(INDEX)
    return _read_models(send(MODELS)) if _no_index(answer) else _read_index(answer)


async def list_models_async(send: Callable[[HttpRequest], Awaitable[HttpAnswer]]
                            ) -> list[ModelEntry]:
    """The awaited twin of :func:`list_models`."""
    answer = await send(INDEX)
    return _read_models(await send(MODELS)) if _no_index(answer) else _read_index(answer)

"""The container answers V1, V2 REST and gRPC exactly as the in-process server does.

Both serve the same random-weights folder (the container gets it mounted read-only at
/mnt/models), so any difference comes from the image: its packages, its Python, its
install of the predictor.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ._docker import Container
from ._wire import Det, assert_same_detections, grpc_infer, v1_predict, v2_infer_rest

pytestmark = pytest.mark.container

# Random weights score every class near 1/5: a low threshold makes them return boxes.
PARAMS = {"score_threshold": 0.1, "max_detections": 20}


def _v1(server: object, image: bytes) -> list[Det]:
    return v1_predict(server.http_url, server.model_name, image, PARAMS)  # type: ignore[attr-defined]


def _v2(server: object, image: bytes) -> list[Det]:
    return v2_infer_rest(server.http_url, server.model_name, image, PARAMS)  # type: ignore[attr-defined]


def _grpc(server: object, image: bytes) -> list[Det]:
    return grpc_infer(server.grpc_url, server.model_name, image, PARAMS)  # type: ignore[attr-defined]


class _Endpoint:
    """The container seen through the same attributes as the in-process server."""

    def __init__(self, container: Container) -> None:
        self.http_url = container.http_url
        self.grpc_url = container.grpc_url
        self.model_name = "detector"


@pytest.mark.parametrize("call", [_v1, _v2, _grpc], ids=["v1", "v2-rest", "v2-grpc"])
def test_container_matches_in_process_server(
    call: Callable[[object, bytes], list[Det]], random_model_container: Container,
    served_model: object, sample_png: bytes,
) -> None:
    want = call(served_model, sample_png)
    assert want, "the in-process server returned no detections to compare"
    got = call(_Endpoint(random_model_container), sample_png)
    assert_same_detections(got, want, f"{call.__name__[1:]} container vs in-process")

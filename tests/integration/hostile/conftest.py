"""Fixtures of the hostile-input tests: one server with small limits, shared by every module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

from tests.support import hostile
from tests.support.servers import Server, start_server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory,
                   random_model_dir: Path) -> Iterator[Server]:
    """One server with small limits for every module here."""
    srv = start_server(tmp_path_factory.mktemp("hostile-logs"), random_model_dir,
                       "--max_body_bytes", str(hostile.MAX_BODY),
                       "--max_image_pixels", str(hostile.MAX_PIXELS),
                       "--max_images_per_request", str(hostile.MAX_IMAGES),
                       "--max_batch_pixels", str(hostile.MAX_BATCH_PIXELS),
                       "--max_image_side", str(hostile.MAX_SIDE),
                       "--max_batch_size", "4")
    yield srv
    print(f"\n[hostile inputs] distinct hostile requests sent: {len(hostile.SENT)}")
    assert srv.stop() == 0, srv.log()[-3000:]


@pytest.fixture(scope="session")
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.http_url, timeout=60) as client:
        yield client


@pytest.fixture(scope="session")
def stub(server: Server) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    channel = grpc.insecure_channel(server.grpc_url,
                                    options=[("grpc.max_send_message_length", -1)])
    yield pb_grpc.GRPCInferenceServiceStub(channel)
    channel.close()

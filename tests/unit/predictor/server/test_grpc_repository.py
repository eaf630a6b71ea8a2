"""grpc_repository: the model name from KServe's and Triton's protos; Triton's index by hand.

Triton's generated messages cannot be imported beside KServe's (both define the
``inference`` package in protobuf's default pool), so Triton's side is written out here
field by field from its ``grpc_service.proto``; tests/integration/test_model_repository.py
runs Triton's own client against the server.
"""

from __future__ import annotations

from kserve.protocol.grpc import grpc_predict_v2_pb2 as kserve_pb

from predictor.server.grpc_repository import (
    decode_index_request,
    encode_index,
    fields,
    model_name,
)


def _string(number: int, text: str) -> bytes:
    data = text.encode()
    return bytes([number << 3 | 2, len(data)]) + data


def test_the_name_is_read_from_either_proto() -> None:
    assert model_name(kserve_pb.RepositoryModelLoadRequest(model_name="site-a")) == "site-a"
    # Triton's RepositoryModelLoadRequest: repository_name = 1, model_name = 2.
    triton = _string(1, "repo") + _string(2, "site-b")
    parsed = kserve_pb.RepositoryModelLoadRequest.FromString(triton)
    assert parsed.model_name == "repo"  # what KServe's own servicer would load
    assert model_name(parsed) == "site-b"
    parsed = kserve_pb.RepositoryModelUnloadRequest.FromString(_string(2, "site-c"))
    assert model_name(parsed) == "site-c"


def test_the_index_is_tritons_repeated_model_index() -> None:
    models = [{"name": "a", "version": "3", "state": "READY", "reason": ""},
              {"name": "b", "version": "", "state": "UNAVAILABLE", "reason": "not loaded"}]
    entries = [dict(fields(value)) for number, value in fields(encode_index(models))
               if number == 1 and isinstance(value, bytes)]
    assert entries == [{1: b"a", 2: b"3", 3: b"READY"},
                       {1: b"b", 3: b"UNAVAILABLE", 4: b"not loaded"}]
    assert encode_index([]) == b""


def test_the_index_request_says_ready_only() -> None:
    assert decode_index_request(_string(1, "") + b"\x10\x01")  # ready = 2 (bool)
    assert not decode_index_request(b"")
    assert list(fields(b"\x08\x96\x01")) == [(1, 150)]

"""Every wire concern of the server, as KServe keeps its own in ``kserve.protocol``.

    messages.py   Request / V2Call / V2Answer: what a request carries, transport-neutral
    v1.py         KServe V1 instances in, predictions out
    v2.py         Open Inference Protocol tensors in and out (shared by REST and gRPC)
    rest.py       REST bodies: content sniffing, V2 JSON and binary, answers, inflating
    grpc_v2.py    gRPC ModelInferRequest / ModelInferResponse, parameters KServe misses
    options.py    request parameters -> validated options
    b64.py        base64 as clients send it
    errors.py     RequestError (a malformed request: 400 / INVALID_ARGUMENT), the image count check

Nothing here runs a server or a model: bytes and messages in, bytes and messages out.
"""

from __future__ import annotations

from .errors import RequestError
from .messages import OutputRequest, OutputTensor, Request, Tensor, V2Answer, V2Call

__all__ = ["OutputRequest", "OutputTensor", "Request", "RequestError", "Tensor",
           "V2Answer", "V2Call"]

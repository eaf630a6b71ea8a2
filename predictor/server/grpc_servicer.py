"""The gRPC side: KServe's servicer with inference and metadata done by :mod:`predictor.protocol`.

``ModelInfer`` parses the request itself (the spec's ``double_param`` included),
refuses an unknown output or version before the model runs, and answers only the
outputs asked for, raw. ``ModelMetadata`` adds ``versions``. Anything unexpected
becomes ``INTERNAL`` with a request id that the server log repeats beside the
traceback. Installed by :mod:`predictor.server.compat`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from grpc_interceptor.exceptions import GrpcException
from kserve.protocol.grpc.servicer import InferenceServicer

from ..errors import InternalError, client_error
from ..protocol import V2Answer, grpc_v2
from .served import REQUEST_ID, ServedModel, check_version, log_refusal, served_model

log = logging.getLogger(__name__)


class DetectorServicer(InferenceServicer):  # type: ignore[misc]
    """KServe's ``GRPCInferenceService`` with our ``ModelInfer`` and ``ModelMetadata``."""

    def __init__(self, data_plane: Any, model_repository_extension: Any,
                 on_reject: Callable[[str], None] | None = None) -> None:
        super().__init__(data_plane, model_repository_extension)
        self.on_reject = on_reject

    async def _model(self, name: str, version: str) -> ServedModel:
        return served_model(self._data_plane, name, version)

    async def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802 (gRPC's name)
        """Runs one inference; errors map to gRPC status codes."""
        metadata = dict(context.invocation_metadata() or ())
        request_id = str(metadata.get(REQUEST_ID) or uuid.uuid4().hex)
        headers = {**{str(k): str(v) for k, v in metadata.items()}, REQUEST_ID: request_id}
        context.set_trailing_metadata(((REQUEST_ID, request_id),))
        try:
            model = await self._model(request.model_name, request.model_version)
            parsed = grpc_v2.parse_infer_request(
                request, max_images=model.limits.max_images_per_request,
                max_pixels=model.limits.max_image_pixels)
            answer, _ = await self._data_plane.infer(model_name=request.model_name,
                                                     request=parsed, headers=headers)
            assert isinstance(answer, V2Answer)
            return grpc_v2.encode_infer_response(answer, model.name, model.version)
        except Exception as exc:
            raise self._refusal(exc, request_id, "ModelInfer") from exc

    async def ModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        """KServe's metadata, plus the version served."""
        try:
            response = await super().ModelMetadata(request, context)
            model = self._data_plane.get_model_from_registry(request.name)
            check_version(model, request.version)
        except Exception as exc:
            raise self._refusal(exc, uuid.uuid4().hex, "ModelMetadata") from exc
        response.versions.append(model.version)
        response.platform = getattr(model, "platform", "") or response.platform
        return response

    def _refusal(self, exc: Exception, request_id: str, method: str) -> GrpcException:
        """The status to answer with: a client's mistake is one log line, a bug a traceback.

        KServe's interceptor would log every error with its traceback; a GrpcException
        passes through it quietly.
        """
        known = client_error(exc)
        if known is None:
            log.error("gRPC request %s (%s) failed", request_id, method, exc_info=exc)
            return InternalError(f"internal server error; the server log has the details "
                                 f"(request id {request_id})")
        reason, error = known
        if reason is not None and self.on_reject is not None:
            self.on_reject(reason)
        if error.http_status < 500:
            log_refusal(request_id, f"gRPC {method}", error.status_code.name, str(error))
        return error

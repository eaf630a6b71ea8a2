"""Clients this project did not write, each wrapped to send one request and read the answer.

Every sender takes the server, a list of encoded pictures (all the same size, so that
the UINT8 forms can batch them), the request parameters and the outputs to ask for,
and returns the output tensors it read back, by name. The differential tests compare
those with the engine called directly. Senders:

- plain ``httpx`` on one pooled connection: V1 JSON (each instance spelling), V1 raw
  body, V2 JSON (BYTES and UINT8) with any Content-Type, V2 binary (hand-built);
- ``kserve.InferenceRESTClient`` (V1 and V2) and ``kserve.InferenceGRPCClient``;
- Triton's ``tritonclient.http`` and ``tritonclient.grpc`` (the latter in a worker
  process of its own: its protobuf and KServe's both define package ``inference``).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import struct
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import numpy as np
from PIL import Image

Tensors = dict[str, np.ndarray]
OUTPUT_NAMES = ("detection_boxes", "detection_scores", "detection_classes", "detection_labels",
                "num_detections")
CONTENT_TYPES = ("application/json", "application/json; charset=utf-8", "APPLICATION/JSON",
                 "text/plain;charset=UTF-8", None)


def pixels(images: Sequence[bytes]) -> np.ndarray:
    """The pictures as one ``B x H x W x 3`` uint8 batch."""
    return np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in images])


def v1_tensors(predictions: list[dict[str, Any]]) -> Tensors:
    """V1 predictions in the V2 outputs' padded shape, so every form compares the same way."""
    k = max((len(p["detections"]) for p in predictions), default=0)
    n = len(predictions)
    out: Tensors = {"detection_boxes": np.zeros((n, k, 4), np.float32),
                    "detection_scores": np.zeros((n, k), np.float32),
                    "detection_classes": np.full((n, k), -1, np.int32),
                    "detection_labels": np.full((n, k), b"", object),
                    "num_detections": np.zeros(n, np.int32)}
    for i, p in enumerate(predictions):
        out["num_detections"][i] = len(p["detections"])
        for j, d in enumerate(p["detections"]):
            out["detection_boxes"][i, j] = d["box"]
            out["detection_scores"][i, j] = d["score"]
            out["detection_classes"][i, j] = d["label_id"]
            out["detection_labels"][i, j] = d["label"].encode()
    return out


def _from_json_output(o: dict[str, Any]) -> np.ndarray:
    if o["datatype"] == "BYTES":
        return np.array([x.encode() for x in o["data"]], dtype=object).reshape(o["shape"])
    dtype = np.float32 if o["datatype"] == "FP32" else np.int32
    return np.array(o["data"], dtype=dtype).reshape(o["shape"])


def _from_raw(datatype: str, shape: list[int], raw: bytes) -> np.ndarray:
    if datatype != "BYTES":
        return np.frombuffer(raw, "<f4" if datatype == "FP32" else "<i4").reshape(shape)
    items, offset = [], 0
    while offset < len(raw):
        (size,) = struct.unpack_from("<I", raw, offset)
        items.append(raw[offset + 4:offset + 4 + size])
        offset += 4 + size
    return np.array(items, dtype=object).reshape(shape)


def _as_bytes(array: np.ndarray) -> np.ndarray:
    """BYTES elements as ``bytes`` (clients hand JSON strings back as ``str``)."""
    if array.dtype != object:
        return array
    return np.array([x.encode() if isinstance(x, str) else x for x in array.reshape(-1)],
                    dtype=object).reshape(array.shape)


def parse_v2_response(r: httpx.Response) -> Tensors:
    """A V2 REST answer read by the spec (JSON, or JSON then binary tensors)."""
    assert r.status_code == 200, f"{r.status_code}: {r.text[:300]}"
    length = r.headers.get("inference-header-content-length")
    content = r.content
    header = json.loads(content[:int(length)] if length else content)
    offset = int(length) if length else len(content)
    out: Tensors = {}
    for o in header["outputs"]:
        size = (o.get("parameters") or {}).get("binary_data_size")
        if size is None:
            out[o["name"]] = _from_json_output(o)
        else:
            out[o["name"]] = _from_raw(o["datatype"], o["shape"], content[offset:offset + size])
            offset += size
    return out


def _grpc_params(params: dict[str, Any], floats_ok: bool) -> dict[str, Any]:
    """gRPC has no list parameter; KServe's gRPC client has no float one either."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, list):
            value = ",".join(map(str, value))
        if isinstance(value, float) and not floats_ok:
            value = repr(value)
        out[key] = value
    return out


class Senders:
    """Every client, bound to one running server; ``close()`` when done."""

    def __init__(self, http_url: str, grpc_url: str) -> None:
        self.http_url = http_url
        self.grpc_url = grpc_url
        self.http = httpx.Client(base_url=http_url, timeout=120)  # one pooled connection
        self._triton_grpc: subprocess.Popen[str] | None = None

    def close(self) -> None:
        """Closes the pooled connection and the Triton worker."""
        self.http.close()
        if self._triton_grpc is not None:
            self._triton_grpc.stdin.close()  # type: ignore[union-attr]
            self._triton_grpc.wait(30)

    # ---- plain httpx ------------------------------------------------------------------
    def v1_json(self, images: Sequence[bytes], params: dict[str, Any], *,
                spelling: str = "image_bytes", content_type: str | None = "application/json"
                ) -> Tensors:
        """V1 JSON with one of the instance spellings; any Content-Type."""
        def instance(data: bytes) -> Any:
            b64 = base64.b64encode(data).decode()
            return {"b64": b64} if spelling == "b64" else {spelling: {"b64": b64}}

        body = json.dumps({"instances": [instance(b) for b in images], "parameters": params})
        headers = {"content-type": content_type} if content_type else {}
        r = self.http.post("/v1/models/detector:predict", content=body.encode(), headers=headers)
        assert r.status_code == 200, f"{r.status_code}: {r.text[:300]}"
        assert r.headers.get("x-model-version"), "V1 answers name the model version"
        return v1_tensors(r.json()["predictions"])

    def v1_raw(self, images: Sequence[bytes], params: dict[str, Any], *,
               content_type: str | None = "image/png") -> Tensors:
        """One picture as the body (no parameters can travel)."""
        assert len(images) == 1
        assert not params
        headers = {"content-type": content_type} if content_type else {}
        r = self.http.post("/v1/models/detector:predict", content=images[0], headers=headers)
        assert r.status_code == 200, f"{r.status_code}: {r.text[:300]}"
        return v1_tensors(r.json()["predictions"])

    def v2_json(self, images: Sequence[bytes], params: dict[str, Any], *, uint8: bool = False,
                content_type: str | None = "application/json",
                outputs: list[dict[str, Any]] | None = None) -> Tensors:
        """V2 JSON: BYTES as base64 strings, or UINT8 pixels as numbers."""
        if uint8:
            batch = pixels(images)
            tensor = {"name": "image", "datatype": "UINT8", "shape": list(batch.shape),
                      "data": batch.reshape(-1).tolist()}
        else:
            tensor = {"name": "image", "datatype": "BYTES", "shape": [len(images)],
                      "data": [base64.b64encode(b).decode() for b in images]}
        doc: dict[str, Any] = {"id": "diff-1", "inputs": [tensor], "parameters": params}
        if outputs is not None:
            doc["outputs"] = outputs
        headers = {"content-type": content_type} if content_type else {}
        r = self.http.post("/v2/models/detector/infer", content=json.dumps(doc).encode(),
                           headers=headers)
        return parse_v2_response(r)

    def v2_binary(self, images: Sequence[bytes], params: dict[str, Any], *, uint8: bool = False,
                  outputs: list[dict[str, Any]] | None = None) -> Tensors:
        """V2 with the binary tensor extension, built by hand from the spec."""
        if uint8:
            batch = pixels(images)
            raw, shape, datatype = batch.tobytes(), list(batch.shape), "UINT8"
        else:
            raw = b"".join(struct.pack("<I", len(b)) + b for b in images)
            shape, datatype = [len(images)], "BYTES"
        doc: dict[str, Any] = {"inputs": [{"name": "image", "datatype": datatype, "shape": shape,
                                           "parameters": {"binary_data_size": len(raw)}}],
                               "parameters": {**params, "binary_data_output": True}}
        if outputs is not None:
            doc["outputs"] = outputs
        head = json.dumps(doc).encode()
        r = self.http.post("/v2/models/detector/infer", content=head + raw,
                           headers={"inference-header-content-length": str(len(head)),
                                    "content-type": "application/octet-stream"})
        return parse_v2_response(r)

    # ---- KServe's own clients --------------------------------------------------------------
    def kserve_rest_v1(self, images: Sequence[bytes], params: dict[str, Any]) -> Tensors:
        """``kserve.InferenceRESTClient`` with protocol v1."""
        from kserve import InferenceRESTClient, RESTConfig

        async def go() -> Any:
            client = InferenceRESTClient(RESTConfig(protocol="v1", timeout=120))
            try:
                body = {"instances": [{"image_bytes": {"b64": base64.b64encode(b).decode()}}
                                      for b in images], "parameters": params}
                return await client.infer(self.http_url, body, model_name="detector")
            finally:
                await client.close()

        return v1_tensors(asyncio.run(go())["predictions"])

    def _kserve_request(self, images: Sequence[bytes], params: dict[str, Any], uint8: bool,
                        outputs: Sequence[str] | None) -> Any:
        from kserve import InferInput, InferRequest
        from kserve.protocol.infer_type import RequestedOutput

        if uint8:
            batch = pixels(images)
            tensor = InferInput("image", list(batch.shape), "UINT8")
            tensor.set_data_from_numpy(batch, binary_data=True)
        else:
            tensor = InferInput("image", [len(images)], "BYTES")
            tensor.set_data_from_numpy(np.array(list(images), dtype=object), binary_data=True)
        requested = [RequestedOutput(n) for n in outputs] if outputs else None
        return InferRequest(model_name="detector", infer_inputs=[tensor], parameters=params,
                            request_outputs=requested)

    @staticmethod
    def _kserve_tensors(response: Any) -> Tensors:
        out: Tensors = {}
        for o in response.outputs:
            array = o.as_numpy()
            if o.datatype == "BYTES":
                array = np.array([x if isinstance(x, bytes) else str(x).encode()
                                  for x in array.reshape(-1)], dtype=object).reshape(o.shape)
            out[o.name] = array
        return out

    def kserve_rest_v2(self, images: Sequence[bytes], params: dict[str, Any], *,
                       uint8: bool = False, outputs: Sequence[str] | None = None) -> Tensors:
        """``kserve.InferenceRESTClient`` with protocol v2 (binary inputs, JSON outputs)."""
        from kserve import InferenceRESTClient, RESTConfig

        async def go() -> Any:
            client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=120))
            try:
                return await client.infer(self.http_url, self._kserve_request(
                    images, params, uint8, outputs), model_name="detector")
            finally:
                await client.close()

        return self._kserve_tensors(asyncio.run(go()))

    def kserve_grpc(self, images: Sequence[bytes], params: dict[str, Any], *, uint8: bool = False,
                    outputs: Sequence[str] | None = None) -> Tensors:
        """``kserve.InferenceGRPCClient`` (string, int and bool parameters only)."""
        from kserve import InferenceGRPCClient

        async def go() -> Any:
            client = InferenceGRPCClient(self.grpc_url, timeout=120)
            try:
                return await client.infer(self._kserve_request(
                    images, _grpc_params(params, floats_ok=False), uint8, outputs))
            finally:
                await client.close()

        return self._kserve_tensors(asyncio.run(go()))

    # ---- Triton's clients ---------------------------------------------------------------
    def triton_http(self, images: Sequence[bytes], params: dict[str, Any], *,
                    uint8: bool = False, binary: bool = True,
                    outputs: Sequence[tuple[str, bool]] | None = None) -> Tensors:
        """``tritonclient.http``: binary or JSON inputs, per-output binary flags."""
        import tritonclient.http as th

        client = th.InferenceServerClient(self.http_url.split("://", 1)[1], network_timeout=120)
        try:
            if uint8:
                batch = pixels(images)
                tensor = th.InferInput("image", list(batch.shape), "UINT8")
                tensor.set_data_from_numpy(batch, binary_data=binary)
            else:
                tensor = th.InferInput("image", [len(images)], "BYTES")
                data = images if binary else [base64.b64encode(b) for b in images]
                tensor.set_data_from_numpy(np.array(list(data), dtype=object), binary_data=binary)
            wanted = outputs if outputs is not None else [(n, binary) for n in OUTPUT_NAMES]
            requested = [th.InferRequestedOutput(n, binary_data=b) for n, b in wanted]
            result = client.infer("detector", [tensor], outputs=requested, parameters=params)
            return {n: _as_bytes(result.as_numpy(n)) for n, _ in wanted}
        finally:
            client.close()

    def triton_grpc(self, images: Sequence[bytes], params: dict[str, Any], *,
                    uint8: bool = False, outputs: Sequence[str] | None = None) -> Tensors:
        """``tritonclient.grpc`` in its worker process (floats go as double_param)."""
        if self._triton_grpc is None:
            self._triton_grpc = subprocess.Popen(
                [sys.executable, "-c", _TRITON_GRPC_WORKER, self.grpc_url],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        job = {"images": [base64.b64encode(b).decode() for b in images], "uint8": uint8,
               "params": _grpc_params(params, floats_ok=True), "outputs": outputs}
        assert self._triton_grpc.stdin is not None
        assert self._triton_grpc.stdout is not None
        self._triton_grpc.stdin.write(json.dumps(job) + "\n")
        self._triton_grpc.stdin.flush()
        reply = json.loads(self._triton_grpc.stdout.readline())
        if "error" in reply:
            raise AssertionError(f"tritonclient.grpc: {reply['error']}")
        return {name: _from_raw(o["datatype"], o["shape"], base64.b64decode(o["raw"]))
                for name, o in reply.items()}


_TRITON_GRPC_WORKER = r"""
import base64, io, json, sys
import numpy as np
import tritonclient.grpc as g
from PIL import Image

client = g.InferenceServerClient(sys.argv[1])
for line in sys.stdin:
    job = json.loads(line)
    images = [base64.b64decode(x) for x in job["images"]]
    try:
        if job["uint8"]:
            batch = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in images])
            tensor = g.InferInput("image", list(batch.shape), "UINT8")
            tensor.set_data_from_numpy(batch)
        else:
            tensor = g.InferInput("image", [len(images)], "BYTES")
            tensor.set_data_from_numpy(np.array(images, dtype=np.object_))
        outputs = [g.InferRequestedOutput(n) for n in job["outputs"]] if job["outputs"] else None
        result = client.infer("detector", [tensor], outputs=outputs, parameters=job["params"],
                              client_timeout=120)
        response = result.get_response()
        reply = {o.name: {"datatype": o.datatype, "shape": list(o.shape),
                          "raw": base64.b64encode(raw).decode()}
                 for o, raw in zip(response.outputs, response.raw_output_contents)}
    except Exception as exc:
        reply = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(reply), flush=True)
"""

Sender = Callable[..., Tensors]

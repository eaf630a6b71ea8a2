"""The web backend's own Prometheus metrics, served on its ``/metrics``.

| name | type | meaning |
|---|---|---|
| detector_web_requests_total{route,status} | counter | requests answered, by route and status |
| detector_web_request_seconds{route} | histogram | time to answer, by route |
| detector_web_inference_seconds | histogram | time of a successful call to the inference service |
| detector_web_inference_errors_total{kind} | counter | failed calls to the service, by kind |
| detector_web_inference_retries_total | counter | retries the client made (429/503/unreachable) |
| detector_web_images_total | counter | pictures sent to the inference service |
| detector_web_inference_service_state{state} | gauge | 1 for the state last seen, else 0 |
| detector_web_refused_requests_total{reason} | counter | refused before any call (below) |
| detector_web_pictures_in_flight | gauge | pictures the backend holds now |

Refusal reasons: ``in_flight`` (over ``--max-in-flight``), ``api_key`` (missing or wrong).

One registry per app, so two apps in one process (tests) do not collide.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .errors import ERROR_KINDS
from .monitor import STATES, ServiceState

__all__ = ["REFUSALS", "ROUTES", "WebMetrics"]

#: The ``route`` label values: the app's routes, then everything else.
ROUTES = ("/", "/api/detect", "/v1/vision/detection", "/v1/vision/custom", "/healthz",
          "/metrics", "/static", "other")
#: The ``reason`` label values of the refusals counter.
REFUSALS = ("in_flight", "api_key")

_TIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class WebMetrics:
    """The metrics of one app, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.requests = Counter("detector_web_requests", "Requests answered by the web backend",
                                ["route", "status"], registry=reg)
        self.request_seconds = Histogram("detector_web_request_seconds",
                                         "Time the web backend took to answer",
                                         ["route"], buckets=_TIME_BUCKETS, registry=reg)
        self.inference_seconds = Histogram("detector_web_inference_seconds",
                                           "Time of a successful call to the inference service",
                                           buckets=_TIME_BUCKETS, registry=reg)
        self.inference_errors = Counter("detector_web_inference_errors",
                                        "Failed calls to the inference service, by kind",
                                        ["kind"], registry=reg)
        self.retries = Counter("detector_web_inference_retries",
                               "Retries made after 429/503/unreachable answers", registry=reg)
        self.images = Counter("detector_web_images", "Pictures sent to the inference service",
                              registry=reg)
        self.service_state = Gauge("detector_web_inference_service_state",
                                   "1 for the inference service's last seen state",
                                   ["state"], registry=reg)
        self.refused = Counter("detector_web_refused_requests",
                               "Requests refused before any call to the inference service",
                               ["reason"], registry=reg)
        self.in_flight = Gauge("detector_web_pictures_in_flight",
                               "Pictures the web backend holds now", registry=reg)
        # Every label value shows from the start, so rate() and alerts see zeros.
        for reason in REFUSALS:
            self.refused.labels(reason=reason)
        for kind in ERROR_KINDS:
            self.inference_errors.labels(kind=kind)
        for state in STATES:
            self.service_state.labels(state=state).set(1 if state == "unknown" else 0)

    @staticmethod
    def route_of(path: str) -> str:
        """The ``route`` label for a request path (bounded: unknown paths are ``other``)."""
        if path in ROUTES:
            return path
        if path.startswith("/v1/vision/custom/"):
            return "/v1/vision/custom"
        return "/static" if path.startswith("/static/") else "other"

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        """Counts one answered request."""
        route = self.route_of(path)
        self.requests.labels(route=route, status=str(status)).inc()
        self.request_seconds.labels(route=route).observe(seconds)

    def observe_state(self, state: ServiceState) -> None:
        """Sets the state gauge (monitor callback)."""
        for name in STATES:
            self.service_state.labels(state=name).set(1 if name == state.state else 0)

    def render(self) -> tuple[bytes, str]:
        """The exposition page and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

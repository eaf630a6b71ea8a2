"""Object-detection predictor for KServe: torchvision detectors over V1, V2 REST and gRPC."""

__version__ = "0.1.0"

"""Object-detection predictor for KServe: torchvision detectors over V1, V2 REST and gRPC."""

from importlib.metadata import PackageNotFoundError as _NotInstalled
from importlib.metadata import version as _version

try:  # the one version is pyproject.toml's, read from the installed distribution
    __version__ = _version("kserve-detector")
except _NotInstalled:  # a source tree that was never installed
    __version__ = "0+unknown"

# Object-detection predictor for KServe 0.21 (V1 + V2 REST on 8080, V2 gRPC on 8081),
# and (target `web`) the product's web backend that calls it, on 8000.
#
#   docker build --target runtime -t kserve-detector .           # CPU variant
#   docker build --target runtime --build-arg VARIANT=gpu -t kserve-detector:gpu . # CUDA
#   docker run --rm -p 127.0.0.1:8080:8080 -p 127.0.0.1:8081:8081 kserve-detector
#   docker build --target web -t kserve-detector-web .           # the web backend, no torch
#   docker build --target light -t kserve-detector-light .       # compiled models, no torch
#   docker run --rm -p 127.0.0.1:8000:8000 kserve-detector-web --url http://HOST:8080
#
# The web stages come first: the classic builder builds every stage before its target,
# so `--target web` never builds torch. The torch predictor is `--target runtime`
# (scripts/image.sh asks for it); the light runtime comes last, after the exporter that
# compiles the demo with the builder's torch.
#
# Build arguments:
#   BASE_IMAGE       Debian bookworm image with Python 3.11 (`python` on PATH); the
#                    same one is used for both stages. scripts/base-image.sh makes a
#                    local one (kserve-detector-base:bookworm) where no registry is reachable.
#   VARIANT          cpu: torch/torchvision from TORCH_INDEX_URL (default PyTorch's CPU
#                    wheel index; about 1.5 GB image). gpu: the CUDA build from PyPI,
#                    CUDA libraries included (about 6.2 GB; run with --gpus all).
#   TORCH_INDEX_URL  where torch/torchvision come from; empty = the variant's default.
#   SERVER_EXTRAS    the pyproject extras the predictor's venv holds (default server;
#                    server,int8 adds NNCF for --cpu_precision int8).
# Classic builder friendly (no BuildKit features). pip in the builders trusts
# .build/ca.crt when scripts/image.sh puts the host's CA bundle there, and installs the
# exact versions constraints.txt pins; the runtime stages copy neither.

ARG BASE_IMAGE=python:3.11-slim-bookworm

# --- requirements: the two dependency lists, read from pyproject.toml alone, so that
# editing anything else (tools, dev extras) keeps the heavy dependency layers cached.
# web.txt: the client's dependencies and the [web] extra; server.txt: the client's and
# the SERVER_EXTRAS (by default [server] alone); light.txt: the client's and [runtime].
FROM ${BASE_IMAGE} AS requirements
ARG SERVER_EXTRAS=server
COPY pyproject.toml /src/pyproject.toml
RUN python -c "import os, re, tomllib; p = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']; \
raw = p['optional-dependencies']; \
ref = lambda r: re.fullmatch(p['name'] + r'\[(.+)\]', r); \
flat = lambda n: [x for r in raw[n] for x in (flat(ref(r).group(1)) if ref(r) else [r])]; \
extra = {n: flat(n) for n in raw}; \
server = [r for n in os.environ['SERVER_EXTRAS'].split(',') for r in extra[n.strip()]]; \
open('/web.txt', 'w').write('\n'.join(p['dependencies'] + extra['web'])); \
open('/light.txt', 'w').write('\n'.join(p['dependencies'] + extra['runtime'])); \
open('/server.txt', 'w').write('\n'.join(p['dependencies'] + server))"

# --- build-base: what both builders share: pip's settings, the pinned versions
# (constraints.txt, applied to every pip call through PIP_CONSTRAINT), the venv script.
# The glob lets the build go on where no CA bundle was supplied.
FROM ${BASE_IMAGE} AS build-base
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_DEFAULT_TIMEOUT=180 \
    PIP_CONSTRAINT=/tmp/build/constraints.txt
COPY scripts/image-venv.sh constraints.txt .build/ca.cr[t] /tmp/build/

# --- web-builder: a virtualenv with web.txt, and the client package alone in /opt/app.
FROM build-base AS web-builder
COPY --from=requirements /web.txt /tmp/build/requirements.txt
RUN bash /tmp/build/image-venv.sh deps /tmp/build/requirements.txt
COPY . /tmp/src
RUN bash /tmp/build/image-venv.sh app /tmp/src predictor \
    && /opt/venv/bin/python -c "import sys, client.web.app; \
bad = [m for m in ('torch', 'kserve', 'predictor') if m in sys.modules]; \
print('web backend imports', bad or 'no server module'); sys.exit(1 if bad else 0)"

# --- run-base: what both runtime images share: the base without pip (its package, its
# commands and the wheel ensurepip would reinstall it from), the user 1000, the health
# check (urllib on HEALTHCHECK_URL, since the image has no curl; the start period is the
# predictor's, which loads a model first), and no compilers, no CA copy.
FROM ${BASE_IMAGE} AS run-base
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/app
RUN set -eu; \
    site="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"; \
    rm -rf "$site"/pip "$site"/pip-*.dist-info /usr/local/bin/pip /usr/local/bin/pip3* \
        /usr/bin/pip /usr/bin/pip3* /usr/share/python-wheels/pip-*.whl; \
    ensure="$(python -c 'import ensurepip, os; print(os.path.dirname(ensurepip.__file__))' \
        2>/dev/null || true)"; \
    if [ -n "$ensure" ]; then rm -f "$ensure"/_bundled/pip-*.whl; fi; \
    groupadd --gid 1000 app; \
    useradd --uid 1000 --gid 1000 --home-dir /home/app --create-home \
        --shell /usr/sbin/nologin app
WORKDIR /home/app
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['HEALTHCHECK_URL'], timeout=4)"]

# --- web: the product's web backend (python -m client.web) on port 8000. Client
# dependencies only (no torch), non-root, works with a read-only root filesystem
# (uploads are parsed in memory). Point it at the inference service with --url or
# DETECT_CLIENT_URL (and the other DETECT_CLIENT_* variables). Its health check is the
# app's own liveness: 200 whatever the inference service's state.
FROM run-base AS web
ENV DETECT_WEB_HOST=0.0.0.0 \
    DETECT_WEB_PORT=8000 \
    HEALTHCHECK_URL=http://127.0.0.1:8000/healthz
COPY --from=web-builder /opt/venv /opt/venv
COPY --from=web-builder /opt/app /opt/app
LABEL org.opencontainers.image.title="kserve-detector-web" \
      org.opencontainers.image.description="Web page and API in front of the kserve-detector inference service" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 1000:1000
EXPOSE 8000
ENTRYPOINT ["python", "-m", "client.web"]
CMD []

# --- builder: a virtualenv with server.txt, and the runtime package beside it in
# /opt/app (on the venv's path through a .pth file; client/ is left out: the runtime
# imports none of it): its own layer, so a source change does not copy the multi-GB
# dependency layer again.
FROM build-base AS builder
ARG VARIANT=cpu
ARG TORCH_INDEX_URL=""
COPY --from=requirements /server.txt /tmp/build/requirements.txt
RUN set -eu; \
    case "$VARIANT" in \
      cpu) index="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}" ;; \
      gpu) index="${TORCH_INDEX_URL:-}" ;; \
      *) echo "VARIANT must be cpu or gpu, not '$VARIANT'" >&2; exit 1 ;; \
    esac; \
    bash /tmp/build/image-venv.sh deps /tmp/build/requirements.txt "$index"; \
    /opt/venv/bin/python -c "from importlib.metadata import version as v; import torch, torchvision, kserve; print('torch', v('torch'), 'torchvision', v('torchvision'), 'kserve', v('kserve'))"
COPY . /tmp/src
RUN bash /tmp/build/image-venv.sh app /tmp/src client \
    && /opt/venv/bin/python -c "import importlib.util as u, predictor; \
assert u.find_spec('client') is None, 'the runtime image ships client/'"

# --- runtime: run-base, the virtualenv, the runtime package.
FROM run-base AS runtime
ARG VARIANT=cpu
ENV XDG_CACHE_HOME=/tmp/.cache \
    TORCH_HOME=/tmp/.cache/torch \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    HEALTHCHECK_URL=http://127.0.0.1:8080/v2/models/detector/ready
RUN mkdir -p /mnt/models
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /opt/app /opt/app
LABEL org.opencontainers.image.title="kserve-detector" \
      org.opencontainers.image.description="torchvision object detector served with KServe 0.21 (V1, V2 REST, V2 gRPC)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.kserve-detector.variant="${VARIANT}"
USER 1000:1000
# Weights: mount a model folder at /mnt/models. The default command asks for the demo
# detector shipped inside the package (predictor/demo/model/) when that folder is empty or
# missing (--demo_if_empty); arguments after the image name replace the command, and then
# an empty folder stops the server at start, as it does in Kubernetes.
EXPOSE 8080 8081
# The health check probes the V2 readiness of the default model; set HEALTHCHECK_URL when
# you change --model_name or --http_port.
ENTRYPOINT ["python", "-m", "predictor"]
CMD ["--model_name", "detector", "--http_port", "8080", "--grpc_port", "8081", "--model_dir", "/mnt/models", \
     "--demo_if_empty"]

# --- exporter: the demo detector compiled ahead of time by the builder's torch
# (python -m predictor.export, checked against the torch path there) into the runtime
# package, where --demo_if_empty finds it. torch stays in this stage.
FROM builder AS exporter
RUN /opt/venv/bin/python -m predictor.export --out /opt/app/predictor/demo/compiled \
    && rm -rf /opt/app/predictor/demo/model

# --- light-deps: the light runtime's virtualenv: the [runtime] extra (kserve, OpenVINO,
# numpy); no torch, torchvision, CUDA libraries or Triton.
FROM build-base AS light-deps
COPY --from=requirements /light.txt /tmp/build/requirements.txt
RUN bash /tmp/build/image-venv.sh deps /tmp/build/requirements.txt \
    && /opt/venv/bin/python -c "import importlib.util as u; \
bad = [m for m in ('torch', 'torchvision', 'triton') if u.find_spec(m)]; \
assert not bad, f'the light runtime holds {bad}'"

# --- light (`make image-light`, scripts/image.sh TARGET=light): the torch-free CPU
# runtime. It serves compiled model folders (python -m predictor.export) mounted at
# /mnt/models, or the compiled demo with --demo_if_empty; a torchvision model folder
# needs the runtime target above.
FROM run-base AS light
ENV HEALTHCHECK_URL=http://127.0.0.1:8080/v2/models/detector/ready
RUN mkdir -p /mnt/models
COPY --from=light-deps /opt/venv /opt/venv
COPY --from=exporter /opt/app /opt/app
LABEL org.opencontainers.image.title="kserve-detector-light" \
      org.opencontainers.image.description="compiled object detector served with KServe 0.21 and OpenVINO, no torch (V1, V2 REST, V2 gRPC)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.kserve-detector.variant="light"
USER 1000:1000
EXPOSE 8080 8081
ENTRYPOINT ["python", "-m", "predictor"]
CMD ["--model_name", "detector", "--http_port", "8080", "--grpc_port", "8081", "--model_dir", "/mnt/models", \
     "--demo_if_empty"]

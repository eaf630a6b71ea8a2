# Short verbs; every recipe longer than a few lines lives in scripts/.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.install-stamp
MODEL_DIR ?= predictor/demo/model
MODEL_NAME ?= detector
HTTP_PORT ?= 8080
GRPC_PORT ?= 8081
ARGS ?=
ARCH_ARGS ?=
WEB_PORT ?= 8000
WEB_ARGS ?=
PYTEST_ARGS ?=
IMAGE ?= kserve-detector
TAG ?= 0.1.0
VARIANT ?= auto
WEB_IMAGE ?= $(IMAGE)-web
DOCKER_RUN_ARGS ?=

.PHONY: install run web demo audit test test-unit test-integration test-browser test-container \
        test-k8s test-monitoring lint bench bench-archs bench-multi bench-start bench-web image image-light image-web image-run web-image-run kind-up deploy e2e \
        kind-down clean proto

install: $(STAMP)

# constraints.txt: the exact versions of what predictor/server/compat.py patches.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[server,int8,dev,web]'
	touch $(STAMP)

run: install  ## serve the detector on port $(HTTP_PORT) (HTTP) and $(GRPC_PORT) (gRPC)
	$(BIN)/python -m predictor --model_name $(MODEL_NAME) --model_dir $(MODEL_DIR) \
		--http_port $(HTTP_PORT) --grpc_port $(GRPC_PORT) $(ARGS)

web: install  ## the page and API on 127.0.0.1:$(WEB_PORT), in front of `make run`'s server
	$(BIN)/python -m client.web --url http://127.0.0.1:$(HTTP_PORT) --model $(MODEL_NAME) \
		--port $(WEB_PORT) $(WEB_ARGS)

demo: install  ## detections on fresh synthetic pictures, drawn as PNGs under out/demo/
	$(BIN)/python scripts/draw_demo.py --url http://127.0.0.1:$(HTTP_PORT)

test: install  ## everything that runs on a machine without Docker engine, cluster or GPU
	$(BIN)/python -m pytest tests -m "not container" $(PYTEST_ARGS)

test-unit: install
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

test-integration: install
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

bench: install  ## raw model vs plain KServe predictor vs this server (ARGS=...), then the architectures table (ARCH_ARGS=...)
	$(BIN)/python -m bench --out bench-results.json $(ARGS)
	$(BIN)/python -m bench.archs --out bench-archs.json $(ARCH_ARGS)

bench-start: install  ## the torch image against the light one: size, docker run to ready, img/s, CPU and RSS per pod (builds both if needed)
	IMAGE=$(IMAGE) TAG=latest VARIANT=$(VARIANT) bash scripts/image.sh >/dev/null
	IMAGE=$(IMAGE)-light TAG=latest TARGET=light VARIANT=$(VARIANT) bash scripts/image.sh >/dev/null
	$(BIN)/python -m bench.start --torch-image $(IMAGE):latest --light-image $(IMAGE)-light:latest \
		--out bench-start.json $(ARGS)

bench-multi: install  ## three demo copies in one server: a fourth loaded and unloaded under load, fairness, RSS (ARGS=...)
	$(BIN)/python -m bench.multi --out bench-multi.json $(ARGS)

bench-archs: install  ## eager vs the CPU engine for RetinaNet, FCOS, Faster R-CNN, SSD, SSDlite; new shapes' cost (ARCH_ARGS=...)
	$(BIN)/python -m bench.archs --out bench-archs.json $(ARCH_ARGS)

test-browser: install  ## the page in headless chromium (apt-get install chromium chromium-driver)
	$(BIN)/python -m pytest tests/browser $(PYTEST_ARGS)

bench-web: install  ## the extra hop: p50/p95 at 1 and 4 clients, direct V2 vs `make web`'s /api/detect and DeepStack route (both running)
	$(BIN)/detect-client bench --url http://127.0.0.1:$(HTTP_PORT) \
		--web-url http://127.0.0.1:$(WEB_PORT) --protocols v2bin,web,deepstack --clients 1,4 $(ARGS)

test-container: install  ## build the image if needed, run it, test it (starts Docker if needed)
	$(BIN)/python -m pytest -m container tests/container $(PYTEST_ARGS)

image:  ## build the container image (skipped when one for these sources exists)
	IMAGE=$(IMAGE) TAG=$(TAG) VARIANT=$(VARIANT) bash scripts/image.sh

image-run: image  ## serve the image on 127.0.0.1:$(HTTP_PORT) (HTTP) and $(GRPC_PORT) (gRPC)
	docker run --rm --name kserve-detector --read-only --tmpfs /tmp \
		-p 127.0.0.1:$(HTTP_PORT):8080 -p 127.0.0.1:$(GRPC_PORT):8081 $(DOCKER_RUN_ARGS) \
		$(IMAGE):$(TAG)

image-light:  ## build the torch-free CPU runtime (Dockerfile target light: compiled models, the demo compiled at build)
	IMAGE=$(IMAGE)-light TAG=$(TAG) TARGET=light VARIANT=$(VARIANT) bash scripts/image.sh

image-web:  ## build the web backend's image (Dockerfile target web: client only, no torch)
	IMAGE=$(WEB_IMAGE) TAG=$(TAG) TARGET=web bash scripts/image.sh

web-image-run: image-web  ## the web image on 127.0.0.1:$(WEB_PORT), calling `make run`'s server on this host
	docker run --rm --name kserve-detector-web --read-only --cap-drop ALL \
		--add-host host.docker.internal:host-gateway -p 127.0.0.1:$(WEB_PORT):8000 \
		-e DETECT_CLIENT_URL=http://host.docker.internal:$(HTTP_PORT) $(DOCKER_RUN_ARGS) \
		$(WEB_IMAGE):$(TAG)

test-k8s: install  ## manifests against the kserve/kubernetes API models, scripts: no cluster needed
	$(BIN)/python -m pytest -m k8s tests/k8s $(PYTEST_ARGS)

test-monitoring: install  ## alerts (promtool), dashboard and autoscaling queries on a real Prometheus (apt-get install prometheus)
	$(BIN)/python -m pytest -m monitoring tests/monitoring $(PYTEST_ARGS)

kind-up:  ## kind cluster + cert-manager + KServe (Standard mode)
	scripts/kind-e2e.sh up

deploy:  ## build the predictor and web images, kind load, apply overlays/kind (OVERLAY=...) and manifests/app
	scripts/kind-e2e.sh deploy

e2e:  ## port-forward the predictor and web app; tests/e2e, then the app's /healthz and /api/detect
	scripts/kind-e2e.sh e2e

kind-down:  ## delete the kind cluster
	scripts/kind-e2e.sh down

lint: install  ## ruff, mypy strict, then the dependency audit
	$(BIN)/ruff check predictor client bench demo launch tests scripts
	$(BIN)/mypy predictor client bench demo launch
	$(MAKE) audit

audit: install  ## known vulnerabilities in the installed dependencies: fails on a finding; says so when PyPI is unreachable
	BIN=$(BIN) bash scripts/audit.sh

proto:  ## regenerate client/protos/*_pb2*.py from inference.proto (pinned grpcio-tools)
	PYTHON=$(PYTHON) bash scripts/gen-protos.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache build *.egg-info

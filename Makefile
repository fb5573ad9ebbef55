# The one place set-up commands live; README, Dockerfile and CI call these targets.
PYTHON ?= python3
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 8080
GRPC_PORT ?= 50051
BIN := $(VENV)/bin

.PHONY: env models tools run run-triton test lint eval ablate fuzz soak burst bench bench-scaling bench-batch render-example clean

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[build,dev]'
	touch $@

models: env
	$(BIN)/facepose models build

run: models
	FACEPOSE_HOST=$(HOST) FACEPOSE_PORT=$(PORT) FACEPOSE_GRPC_PORT=$(GRPC_PORT) $(BIN)/facepose serve

# Local Triton (CPU, python backend) and the gateway using it; Ctrl-C stops both.
run-triton: models
	$(BIN)/facepose triton --grpc-port 8001 & triton=$$!; \
	trap 'kill $$triton' EXIT INT TERM; \
	FACEPOSE_RUNTIME=triton FACEPOSE_TRITON_URL=127.0.0.1:8001 FACEPOSE_HOST=$(HOST) \
	FACEPOSE_PORT=$(PORT) FACEPOSE_GRPC_PORT=$(GRPC_PORT) $(BIN)/facepose serve

lint: env
	$(BIN)/ruff check .

# Debian packages some tests drive: Prometheus and promtool (observability tests), chromium and
# chromium-driver (the browser test). Without apt-get (or as non-root) those tests skip.
TOOL_PACKAGES := prometheus chromium chromium-driver
tools:
	@if command -v promtool >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 \
	    && command -v chromium >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq --no-install-recommends $(TOOL_PACKAGES); \
	else echo "apt-get unavailable: Prometheus and browser tests will be skipped"; fi

test: models lint tools
	PYTHONHASHSEED=0 $(BIN)/pytest -q -rs

# Longer runs, not part of `make test`.
fuzz: models
	PYTHONHASHSEED=0 FUZZ_EXAMPLES=500 $(BIN)/pytest -q tests/test_fuzz_api.py

soak: models
	$(BIN)/python scripts/soak.py --minutes 10

# 256 requests of a 1080p JPEG, 64 at a time: resident memory before, at its peak and after.
burst: models
	$(BIN)/python scripts/burst.py

# Side by side with the peer (mediapipe, installed into .bench/peer-env on first use).
bench: models
	$(BIN)/python scripts/bench.py

bench-scaling: models
	$(BIN)/python scripts/bench_scaling.py --plot docs/scaling.png

bench-batch: models
	$(BIN)/python scripts/bench_batch.py

# The README's example overlay, docs/render-example.jpg, made by /v1/render.
render-example: models
	$(BIN)/python scripts/render_example.py --out docs/render-example.jpg

eval: models
	$(BIN)/python scripts/eval_aflw2000.py ../shared/data/aflw2000-dev

# What each pipeline step buys and costs, on the large dev set, beside the peer.
ablate: models
	$(BIN)/python scripts/ablate.py ../shared/data/aflw2000-dev-large --boxes

clean:
	rm -rf $(VENV) model_repository/*/1 .triton

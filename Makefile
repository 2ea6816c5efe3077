# The README's two commands are `make up` and `make test`; the rest are helpers.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev

.PHONY: up test bytecode lint format proto bench screenshots clean image test-containers

# uv installs the ~50 wheels in a few seconds where pip takes over twenty; pip stays the fallback.
# Bytecode is compiled at install: otherwise the first start of every process compiles it, all at once
# (uv with --compile-bytecode, pip by default). Both compile site-packages only: see `bytecode` for ours.
PIP_INSTALL = if [ -x $(BIN)/uv ]; then $(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python $(1); \
	else $(BIN)/pip install -q $(1); fi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q uv || echo "uv not available; installing with pip"

# The compiled span walker is built at install: a changed .pyx (or setup.py) installs again. Without a C
# compiler the install goes on, and one line says ingest uses the pure-Python walker.
WALKER := src/boutique/observatory/otlp/_walker.pyx setup.py
WALKER_NOTICE = $(BIN)/python -c "from boutique.observatory.otlp import walk; walk.COMPILED or print(walk.IMPLEMENTATION)"

$(STAMP): pyproject.toml $(WALKER) | $(BIN)/python
	@$(call PIP_INSTALL,-e .)
	@$(WALKER_NOTICE)
	touch $@

$(DEVSTAMP): pyproject.toml $(WALKER) | $(BIN)/python
	@$(call PIP_INSTALL,-e '.[dev]')
	@$(WALKER_NOTICE)
	touch $@ $(STAMP)

# Our own package is installed editable, so its modules stay in src/ and no installer compiles them;
# where bytecode is not written at run time (PYTHONDONTWRITEBYTECODE, common in containers and CI) every
# process would compile them again at each start. compileall skips what is compiled already (~0.05 s).
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q src/boutique

## up: create .venv, install, and run the whole shop on this machine
up: bytecode
	$(BIN)/boutique up $(ARGS)

## test: install the dev extras and run every check and test
test: $(DEVSTAMP) lint bytecode
	$(BIN)/pytest $(PYTEST_ARGS)

## image: build the container image localhost/boutique:dev with podman (docs/containers.md)
image:
	deploy/containers/image.sh

## test-containers: build the image and run the shop as containers (podman kube play), then remove them
test-containers: $(DEVSTAMP)
	$(BIN)/pytest tests/containers $(PYTEST_ARGS)

lint: $(DEVSTAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy src

format: $(DEVSTAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## proto: regenerate the gRPC/protobuf code from src/boutique/shop/proto/demo.proto (and pprof's and Pyroscope push's messages)
proto: $(DEVSTAMP)
	$(BIN)/python -m grpc_tools.protoc -Isrc --python_out=src --pyi_out=src --grpc_python_out=src \
		src/boutique/shop/proto/demo.proto
	$(BIN)/python -m grpc_tools.protoc -Isrc --python_out=src --pyi_out=src \
		src/boutique/observatory/profiles/pprof.proto src/boutique/observatory/profiles/push.proto

bench: $(DEVSTAMP)
	$(BIN)/python benchmarks/startup.py --spawn fork,plain
	$(BIN)/python benchmarks/mesh_overhead.py
	$(BIN)/python benchmarks/tracing_overhead.py
	$(BIN)/python benchmarks/ui_large_trace.py
	$(BIN)/python benchmarks/failover.py
	$(BIN)/python benchmarks/overload.py
	$(BIN)/python benchmarks/walker.py
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/query.py

## screenshots: run the browser tests and copy their screenshots into docs/screenshots/
screenshots: $(DEVSTAMP)
	$(BIN)/pytest tests/ui -q
	cp test-output/ui/search.png test-output/ui/trace.png test-output/ui/trace-10000.png \
		test-output/ui/dependencies.png test-output/ui/service.png test-output/ui/mesh-open.png docs/screenshots/

clean:
	rm -rf $(VENV) .boutique .pytest_cache .ruff_cache .mypy_cache

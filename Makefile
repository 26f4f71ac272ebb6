# Front door. `make run` and `make test` work on a fresh clone: they build .venv themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONPATH := src
SCENARIO ?= scenarios/default.json
STAMP := $(VENV)/.installed
# checkov has its own venv: its pins (boto3, pydantic, ...) would fight the project's.
TOOLS_VENV := .venv-tools
CHECKOV_VERSION := 3.3.30
CHECKOV_STAMP := $(TOOLS_VENV)/.checkov-$(CHECKOV_VERSION)

.PHONY: venv run serve test lint format typecheck cfn-lint checkov unit bench soak clean browser

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)  ## the main job on the embedded default (simulated ML + moto), SCENARIO=path
	$(PY) -m devstack run --scenario $(SCENARIO)

serve: $(STAMP)  ## the REST API on http://127.0.0.1:3000 (the console at /console/) over the embedded default, SCENARIO=path
	$(PY) -m devstack serve --scenario $(SCENARIO) --port 3000

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# The application stack and the one-time account stack (account/: once per account and region, README Deploy).
TEMPLATES := template.yaml account/api-gateway-logging.yaml

cfn-lint: $(STAMP)
	$(VENV)/bin/cfn-lint $(TEMPLATES)

$(CHECKOV_STAMP):
	test -x $(TOOLS_VENV)/bin/python || $(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(TOOLS_VENV)/bin/python -m pip install --quiet checkov==$(CHECKOV_VERSION)
	touch $(CHECKOV_STAMP)

checkov: $(CHECKOV_STAMP)  ## security scan of the templates; any finding fails (skips live in the template, with reasons)
	$(TOOLS_VENV)/bin/checkov $(addprefix -f ,$(TEMPLATES)) --framework cloudformation --compact --quiet --skip-download

# tests/ui loads the API page in Debian's chromium. Installed only when missing and we are root; otherwise nothing
# is installed and that test fails with a message saying so.
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's chromium for tests/ui"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	    || echo "could not install chromium: tests/ui will fail"; \
	fi

# Two workers on this 2-core machine, a whole file per worker at a time (--dist loadfile): a file's module-scoped
# stack is started once. PYTEST_WORKERS=0 runs everything in one process.
PYTEST_WORKERS ?= 2
unit: $(STAMP) browser
	$(VENV)/bin/pytest $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile)

test: lint typecheck cfn-lint checkov unit  ## everything CI runs

bench: $(STAMP)
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# The model-based test of the sale lifecycle with fresh randomness and many more examples than `make test` runs
# (it prints how many examples, steps and crashes ran). MODEL_EXAMPLES / MODEL_STEPS to change them.
MODEL_EXAMPLES ?= 300
MODEL_STEPS ?= 50
# A failure is printed as found, with every step: shrinking replays whole examples, and under load a replay can diverge.
MODEL_SHRINK ?= 0
soak: $(STAMP)
	MODEL_SOAK=1 MODEL_SHRINK=$(MODEL_SHRINK) MODEL_EXAMPLES=$(MODEL_EXAMPLES) MODEL_STEPS=$(MODEL_STEPS) $(VENV)/bin/pytest tests/model -q -s

clean:
	rm -rf $(VENV) $(TOOLS_VENV) .mypy_cache .pytest_cache .ruff_cache .aws-sam

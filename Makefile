# Two commands on a fresh machine (Python 3.11 and make):
#   make example   run the main job: the XGBoost HIGGS DAG end to end on the embedded Ray cluster,
#                  its model checkpointed to a local S3 server
#   make test      lint, type-check, build the docs and run every test (unit, then integration),
#                  timing each phase
# Both build the environment in .venv first (pinned by requirements/lock.txt).

VENV := .venv
BIN := $(VENV)/bin
# The ray[default]-only environments of the clusters that the Jobs API tests start: the lock's
# Ray (the newest the provider supports) and the oldest it supports (scripts/ray_only_cluster.py).
RAY_ONLY_VENV := .ray-only-venv
RAY_OLDEST_VENV := .ray-oldest-venv
PYTHON ?= python3
AIRFLOW_ENV := AIRFLOW_HOME=$(CURDIR)/airflow-home AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	AIRFLOW__CORE__LOAD_EXAMPLES=false RAY_USAGE_STATS_ENABLED=0 \
	AIRFLOW__CORE__XCOM_BACKEND=airflow_ray.xcom.backend.RayXComBackend

# DAG params of the main job, e.g. make example CONF='{"path": "/data/HIGGS.csv.gz", "rows": 0}'
CONF ?= {}

.PHONY: venv ray-only-venv example test lint typing docs screenshots dist stop-cluster clean

venv: $(VENV)/.installed

$(VENV)/.installed: setup.py requirements/lock.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c requirements/lock.txt -e ".[tests,dev,examples]"
	touch $@

ray-only-venv: $(RAY_ONLY_VENV)/.installed $(RAY_OLDEST_VENV)/.installed

$(RAY_ONLY_VENV)/.installed: requirements/lock.txt | $(VENV)/.installed
	$(BIN)/python -m scripts.ray_only_cluster

$(RAY_OLDEST_VENV)/.installed: requirements/lock.txt | $(VENV)/.installed
	$(BIN)/python -m scripts.ray_only_cluster --oldest

example: venv
	$(AIRFLOW_ENV) $(BIN)/python scripts/main_job.py --conf '$(CONF)'
	@echo "The embedded Ray cluster keeps running for the next DAG run; stop it with: make stop-cluster"

stop-cluster: venv
	$(AIRFLOW_ENV) $(BIN)/airflow-ray local stop

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typing: venv
	$(BIN)/mypy

# The docs site (docs/, Sphinx with MyST) into docs/_build/html: warnings are errors, broken
# references too (-n), and every page is read again (-E).
docs: venv
	$(AIRFLOW_ENV) $(BIN)/python -m sphinx -E -W --keep-going -n -q -b html docs docs/_build/html

# The docs' screenshots (docs/_static/screenshots), from a real API server, cluster and DAG runs,
# through Debian's Chromium (apt-get install chromium): a maintainer's command, not part of test.
screenshots: venv
	$(BIN)/python -m scripts.screenshots --out docs/_static/screenshots

# Each phase of `make test` says how long it took, passed or failed, so that CI logs show where
# the time goes; the integration run also lists its 25 slowest tests.
phase = start=$$(date +%s); $(2); rc=$$?; \
	echo "make test: $(1) took $$(( $$(date +%s) - start )) s$$([ $$rc -eq 0 ] || echo ' and FAILED')"; \
	exit $$rc

test:
	@$(call phase,build,$(MAKE) --no-print-directory venv ray-only-venv)
	@$(call phase,lint,$(MAKE) --no-print-directory lint)
	@$(call phase,types,$(MAKE) --no-print-directory typing)
	@$(call phase,docs,$(MAKE) --no-print-directory docs)
	@$(call phase,unit,$(BIN)/pytest tests/unit)
	@$(call phase,integration,$(BIN)/pytest tests/integration --durations=25)

# The sdist and the wheel in dist/ (the wheel built from the sdist), checked as PyPI would.
dist: venv
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/twine check --strict dist/*

clean:
	rm -rf $(VENV) $(RAY_ONLY_VENV) $(RAY_OLDEST_VENV) airflow-home build dist docs/_build *.egg-info

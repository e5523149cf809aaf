# The two commands the README promises: `make bench` and `make test`. Both bootstrap ./.venv first.
PY := .venv/bin/python

.PHONY: bootstrap test bench docs lint kernels-check clean

bootstrap:
	@bash scripts/bootstrap.sh

test: bootstrap
	$(PY) -m ruff check parrnn tests benchmarks examples scripts
	$(PY) scripts/nvrtc_check.py check
	$(PY) -m pytest -q

bench: bootstrap
	$(PY) -m parrnn.experiments.bench.bench_command --preset default --out benchmarks/results/latest

docs: bootstrap
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

lint: bootstrap
	$(PY) -m ruff check parrnn tests benchmarks examples scripts

kernels-check: bootstrap
	$(PY) scripts/nvrtc_check.py check

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache

# The two commands the README promises: `make bench` and `make test`. Both bootstrap ./.venv first.
PY := .venv/bin/python

.PHONY: bootstrap test bench lint kernels-check clean

bootstrap:
	@bash scripts/bootstrap.sh

test: bootstrap
	$(PY) -m ruff check parrnn tests benchmarks
	$(PY) -m parrnn.kernels check
	$(PY) -m pytest -q

bench: bootstrap
	$(PY) -m parrnn.bench.cli --preset default --out benchmarks/results/latest

lint: bootstrap
	$(PY) -m ruff check parrnn tests benchmarks

kernels-check: bootstrap
	$(PY) -m parrnn.kernels check

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache

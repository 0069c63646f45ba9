# The two commands on a fresh machine: `make demo` and `make test`.
# Everything installs into .venv with pip (torch is pinned to the CPU wheel the machines carry).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip

.PHONY: demo test bench lint venv clean

# The stamp file re-runs the install whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/rnnkit demo

# pytest exits 5 when it collects no test: that is a failure here, as any non-zero exit is.
test: venv
	$(PY) -m pytest -q

# torchrecurrent (the peer we compare with) is a benchmark-only extra.
bench: venv
	$(PIP) install --quiet -e '.[bench]'
	OMP_NUM_THREADS=2 $(PY) benchmarks/bench.py

lint: venv
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache

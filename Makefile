# Every step a fresh clone needs lives here: CI runs `make test` on a clean machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Where pip takes torch and torchvision from. Empty (the default, works everywhere): PyPI, which
# on x86_64 Linux is a CUDA build (about 6.3 GB installed, 3.2 GB of it CUDA libraries; it also
# runs on CPUs). On a machine without a GPU: make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu
# (the CPU-only build: about 2 GB installed in all).
TORCH_INDEX ?=

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(if $(TORCH_INDEX),$(PY) -m pip install -q --index-url $(TORCH_INDEX) torch torchvision)
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) tune_main.py --preset demo

test: $(STAMP)
	$(PY) -m pytest -q

# the quick single-threaded CPU trainer benchmark; its JSON goes to runs/benchmarks/ (untracked)
bench: $(STAMP)
	$(PY) benchmarks/trainer.py --device cpu --quick --threads 1

clean:
	rm -rf $(VENV) results

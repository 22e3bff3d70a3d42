# Two entry points (see README): `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test sample-data clean-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/labelaudit scan sample_data/fashion_mnist_noisy/images --truth sample_data/fashion_mnist_noisy/truth.csv --out runs/sample-scan

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Regenerate sample_data/ from Debian's dataset-fashion-mnist package.
sample-data: $(STAMP)
	$(BIN)/python scripts/make_sample_data.py

clean-venv:
	rm -rf $(VENV)

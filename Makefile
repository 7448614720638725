# SAGERec: the two quick-start commands are `make train` and `make test`; each sets up what it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU wheel of torch by default (a plain `torch` resolves to a multi-GB CUDA build on a CPU machine).
# On a GPU machine: make train TORCH="torch>=2.2"
TORCH  ?= torch==2.13.0
# The packaged Sentence-BERT model needs no network; set HF_HUB_OFFLINE=0 to let other models download.
export HF_HUB_OFFLINE ?= 1

.PHONY: install train test check docs docs-serve clean

# The install stamp is named after a hash of what install depends on (pyproject.toml's dependency sections and
# TORCH), not after pyproject.toml's mtime: nbdev-export (run by `make check`) rewrites that file unchanged.
STAMP  := $(VENV)/.installed-$(shell $(PYTHON) tools/deps_hash.py "$(TORCH)")

install: $(STAMP)

$(STAMP):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check "$(TORCH)"
	$(BIN)/pip install -q --disable-pip-version-check -e ".[dev]"
	rm -f $(VENV)/.installed $(VENV)/.installed-*
	touch $@

train: install
	mkdir -p runs
	$(BIN)/python -m sagerec.run nbs/train.ipynb runs/quickstart.ipynb -p run_name quickstart  # papermill, quiet on Ctrl-C

check: install
	$(BIN)/python tools/check.py

test: check
	$(BIN)/python -m pytest

docs: install
	$(BIN)/python tools/docs.py build

docs-serve: docs
	$(BIN)/python tools/docs.py serve

clean:
	rm -rf $(VENV) _site _docs

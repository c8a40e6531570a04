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
# make predict: the run folder (default: the one make train-snn writes for DATA and MODEL) and
# what to answer (image files, folders, imagefolder:/csv: sources or a store; several: quote them)
RUN   ?= data/runs/$(notdir $(basename $(patsubst %/,%,$(lastword $(subst :, ,$(DATA))))))-$(MODEL)
INPUT ?=
# pytest-xdist processes for make test (the README's suite times: 2 cores, 2 workers)
TEST_WORKERS ?= 2

EMBED_ARGS := --data $(DATA) --model $(MODEL) $(if $(CHECKPOINT),--weights $(CHECKPOINT),--weights $(WEIGHTS))

help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:[^#]*## /\t/' | expand -t 19

.PHONY: help install embed inspect train-snn tune predict test test-slow bench bench-embed \
        bench-snn bench-gpu bench-scale bench-incremental clean

install: $(STAMP) ## make .venv and install the package with its dev extras

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,lite]'
	touch $(STAMP)

embed: $(STAMP) ## stage one: embed DATA with MODEL into a Zarr store (ARGS: more options)
	$(PY) -m stages embed $(EMBED_ARGS) $(ARGS)

inspect: $(STAMP) ## print what the store of DATA and MODEL holds
	$(PY) -m stages inspect $(EMBED_ARGS) $(ARGS)

train-snn: $(STAMP) ## stage two: train and evaluate CoLaNET on that store
	$(PY) -m stages train-snn $(EMBED_ARGS) $(ARGS)

tune: $(STAMP) ## search CoLaNET parameters on a validation split
	$(PY) -m stages tune $(EMBED_ARGS) $(ARGS)

predict: $(STAMP) ## answer INPUT (images, folders, a store) with RUN's model, CSV on stdout
	$(if $(INPUT),,$(error give what to predict: make predict INPUT=photo.jpg (RUN=data/runs/NAME)))
	@$(PY) -m stages predict --run $(RUN) $(INPUT) $(ARGS)

test: $(STAMP) ## the test suite (what CI runs; TEST_WORKERS processes)
	$(PY) -m pytest -q -n $(TEST_WORKERS) $(ARGS)

test-slow: $(STAMP) ## the long checks kept out of make test (10 kills per stage)
	$(PY) -m pytest -q -m slow $(ARGS)

bench: bench-embed bench-snn bench-scale bench-incremental ## every benchmark below

bench-embed: $(STAMP) ## stage one against the bare forward pass
	$(PY) bench/embed.py $(ARGS)

bench-snn: $(STAMP) ## stage two against the NumPy reference and the row-add bound
	$(PY) bench/snn.py $(ARGS)

bench-gpu: $(STAMP) ## stage two on a GPU: identity with the CPU, samples/s, 1.28 M-sample projection
	$(PY) bench/gpu.py $(ARGS)

bench-scale: $(STAMP) ## cluster speed-up, flat memory, 1000 classes
	$(PY) bench/scale.py $(ARGS)

bench-incremental: $(STAMP) ## classes learned in 5 tasks with train-snn --init-from
	$(PY) bench/incremental.py $(ARGS)

clean: ## remove .venv and build files
	rm -rf $(VENV) build *.egg-info

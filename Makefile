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
# make predict: the run folder (default: the one make train-snn writes for DATA and MODEL with the
# default CoLaNET options) and what to answer (image files, folders, imagefolder:/csv: sources or a
# store; several: quote them)
# (the store's name: an image folder's own name, dots included; a CSV's file name less .csv)
RUN   ?= data/runs/$(if $(filter imagefolder:%,$(DATA)),$(notdir $(patsubst %/,%,$(DATA:imagefolder:%=%))),$(notdir $(basename $(DATA:csv:%=%))))-$(MODEL)
INPUT ?=
# make compare: the run folders (default: every run folder under data/runs, by the shell's glob,
# so a folder name with a blank stays one name)
RUNS  ?=
# pytest-xdist processes for make test (the README's suite times: 2 cores, 2 workers)
TEST_WORKERS ?= 2

# The Brian2 peer of bench-snn (bench/peer_brian2.py) runs from its own venv: brian2 2.9 needs numpy<2.4
PEER_VENV ?= .venv-peer
PEER_PY   := $(PEER_VENV)/bin/python

# DATA quoted: a folder name with a blank is one argument (DATA="imagefolder:my photos")
EMBED_ARGS := --data '$(DATA)' --model $(MODEL) $(if $(CHECKPOINT),--weights $(CHECKPOINT),--weights $(WEIGHTS))

help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:[^#]*## /\t/' | expand -t 19

.PHONY: help install embed inspect train-snn tune predict compare test test-slow bench bench-embed \
        bench-snn bench-gpu bench-peer peer-venv bench-scale bench-incremental clean

install: $(STAMP) ## make .venv and install the package with its dev extras

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,lite]'
	touch $(STAMP)

embed: $(STAMP) ## stage one: embed DATA with MODEL into a Zarr store (ARGS: more options)
	$(PY) -m stages embed $(EMBED_ARGS) $(ARGS)

inspect: $(STAMP) ## print what the store of DATA and MODEL holds
	$(PY) -m stages inspect --data '$(DATA)' --model $(MODEL) $(ARGS)

train-snn: $(STAMP) ## stage two: train and evaluate CoLaNET on that store
	$(PY) -m stages train-snn $(EMBED_ARGS) $(ARGS)

tune: $(STAMP) ## search CoLaNET parameters on a validation split
	$(PY) -m stages tune $(EMBED_ARGS) $(ARGS)

# Checked when make reads this file, before any prerequisite (a fresh clone would install first).
ifneq ($(filter predict,$(MAKECMDGOALS)),)
ifeq ($(strip $(INPUT)),)
$(error give what to predict: make predict INPUT=photo.jpg (RUN=data/runs/NAME))
endif
endif
ifneq ($(filter compare,$(MAKECMDGOALS)),)
ifeq ($(strip $(RUNS))$(wildcard data/runs/*/),)
$(error no run folders: train one (make train-snn) or give RUNS=...)
endif
endif

predict: $(STAMP) ## answer INPUT (images, folders, a store) with RUN's model, CSV on stdout
	@$(PY) -m stages predict --run '$(RUN)' $(INPUT) $(ARGS)

compare: $(STAMP) ## finished runs side by side (RUNS: their folders; default: every run)
	@$(PY) -m stages compare $(or $(strip $(RUNS)),data/runs/*/) $(ARGS)

test: $(STAMP) ## the test suite (what CI runs; TEST_WORKERS processes)
	$(PY) -m pytest -q -n $(TEST_WORKERS) $(ARGS)

test-slow: $(STAMP) ## the long checks kept out of make test (10 kills per stage)
	$(PY) -m pytest -q -m slow $(ARGS)

bench: bench-embed bench-snn bench-gpu bench-scale bench-incremental ## every benchmark below (bench-gpu: "not measured here" without a GPU)

bench-embed: $(STAMP) ## stage one on generated photo-like JPEGs against the forward pass alone
	$(PY) bench/embed.py $(ARGS)

bench-snn: $(STAMP) ## stage two against the NumPy reference, the row-add bound (and Brian2)
	$(PY) bench/snn.py $(if $(wildcard $(PEER_PY)),--peer $(PEER_PY)) $(ARGS)

peer-venv: $(PEER_PY) ## make .venv-peer with brian2 (for bench-snn's x Brian2 ratios)

$(PEER_PY):
	$(PYTHON) -m venv $(PEER_VENV)
	$(PEER_PY) -m pip install --quiet brian2 "numpy<2.4"

bench-peer: $(PEER_PY) ## the Brian2 peer alone: runtime, standalone, NumPy (E 15, 1000 samples)
	$(PEER_PY) bench/peer_brian2.py --ensemble 15 --samples 1000 --winit=0,1 --out data/bench/peer.json $(ARGS)

bench-gpu: $(STAMP) ## stage two on a GPU: identity with the CPU, samples/s, 1.28 M-sample projection
	$(PY) bench/gpu.py $(ARGS)

bench-scale: $(STAMP) ## cluster speed-up, flat memory, 1000 classes
	$(PY) bench/scale.py $(ARGS)

bench-incremental: $(STAMP) ## classes learned in 5 tasks with train-snn --init-from
	$(PY) bench/incremental.py $(ARGS)

clean: ## remove .venv, .venv-peer and build files
	rm -rf $(VENV) $(PEER_VENV) build *.egg-info

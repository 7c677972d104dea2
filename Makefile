# Everyday commands; each is one line you can also type yourself.
.PHONY: install test test-fast lint notebooks notebooks-check bench demo

install:  ## the package with the test and lint tools
	pip install -e ".[dev]"

test:  ## the whole suite, as CI runs it (one pytest-xdist worker per core; add -n 0 for one process)
	python -m pytest

test-fast:  ## the inner loop: everything but the slow tests (subprocesses, torchrun, notebooks), under a minute
	python -m pytest -m "not slow"

lint:  ## ruff with the configuration in pyproject.toml, and the notebooks against their sources
	ruff check .
	python tutorials/make_notebooks.py --check

notebooks:  ## regenerate tutorials/*.ipynb from their jupytext sources tutorials/NN_topic.py
	python tutorials/make_notebooks.py

bench:  ## speed of the core vs transformers / torch.nn, and the cost of one update of every method
	python benchmarks/speed.py
	python benchmarks/methods.py

demo:  ## data2vec 2.0 on scikit-learn's digits vs random init and raw pixels (4-5 minutes on a 2-core CPU)
	data2vec demo

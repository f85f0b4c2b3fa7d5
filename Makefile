# Shortcuts for working on hfopt (the README's commands do the set-up; these assume the virtualenv is active).
.PHONY: test test-all quality format bench docs docs-serve

test:        ## the fast lane: unit tests, no recipe subprocesses, no real models (about a minute)
	python -m pytest -q -m "not slow and not real_model"

test-all:    ## everything CI runs
	python -m pytest -q -rs

quality:     ## what CI checks before the tests
	ruff check .
	ruff format --check .

docs:        ## the docs site as CI builds it (needs the docs extra): a broken link or missing page fails
	NO_MKDOCS_2_WARNING=1 mkdocs build --strict --site-dir build/site

docs-serve:  ## the docs site at http://127.0.0.1:8000, rebuilt as you edit
	NO_MKDOCS_2_WARNING=1 mkdocs serve

format:      ## fix what ruff can
	ruff check --fix .
	ruff format .

BENCHMARKS = recipe_vs_baselines cpu_bf16 dynamic_batching callbacks_overhead compress_sst2 compress_chain_sst2 \
             optimize_sst2 heldout_vs_dev_sst2 inc_sst2 compress_chain_lm optimize_lm distill_sst2 qat_sharing_sst2 study_parallel gpu

bench:       ## every benchmark, one after another (needs ../shared/data and the demo extra; hours on two CPU cores)
	for name in $(BENCHMARKS); do python bench/$$name.py || exit 1; done

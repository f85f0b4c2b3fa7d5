# Shortcuts for working on hfopt (the README's commands do the set-up; these assume the virtualenv is active).
.PHONY: test test-all quality format bench

test:        ## the fast lane: unit tests, no recipe subprocesses, no real models (about a minute)
	python -m pytest -q -m "not slow and not real_model"

test-all:    ## everything CI runs
	python -m pytest -q -rs

quality:     ## what CI checks before the tests
	ruff check .
	ruff format --check .

format:      ## fix what ruff can
	ruff check --fix .
	ruff format .

BENCHMARKS = recipe_vs_baselines cpu_bf16 dynamic_batching callbacks_overhead compress_sst2 compress_chain_sst2 \
             compress_chain_lm distill_sst2 qat_sharing_sst2 gpu

bench:       ## every benchmark, one after another (needs ../shared/data and the demo extra; hours on two CPU cores)
	for name in $(BENCHMARKS); do python bench/$$name.py || exit 1; done

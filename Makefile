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

bench:       ## every benchmark (needs ../shared/data and the demo extra; an hour or more on two CPU cores)
	for script in bench/*.py; do python $$script || exit 1; done

# The two commands of the README. Both work on a fresh machine: they install what they need.
.PHONY: demo test lint bench setup

demo:          ## install everything and run the end-to-end demo on the embedded defaults
	scripts/setup.sh yuface
	.venv/bin/visionlake demo

test:          ## install everything and run the whole test suite
	scripts/setup.sh all,test
	.venv/bin/python -m pytest -q --durations=20

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

bench:         ## benchmarks, JSON lines (see docs/benchmarks.md)
	scripts/setup.sh yuface
	.venv/bin/python bench/run.py --quick

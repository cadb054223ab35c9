# The two commands of the README. Both work on a fresh machine: they install what they need.
.PHONY: demo test lint bench setup

demo:          ## install everything and run the end-to-end demo on the embedded defaults
	scripts/setup.sh yuface
	.venv/bin/visionlake demo

# Tests run in TEST_WORKERS processes (pytest-xdist), a test file per process at a time so a file's
# fixtures are built once; each process starts its own servers. Two suit a 2-core machine: most tests
# wait on subprocesses, brokers and servers rather than on the CPU.
TEST_WORKERS ?= 2

test:          ## install everything and run the whole test suite
	scripts/setup.sh all,test
	.venv/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

bench:         ## benchmarks, JSON lines (see docs/benchmarks.md)
	scripts/setup.sh yuface
	.venv/bin/python bench/run.py --quick

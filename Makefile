# avatarflow: two commands do all the set-up.
#   make demo   portrait + speech -> out/demo.mp4 (embedded, CPU)
#   make test   installs what it needs and runs the tests
#   make up     a local cluster (redis-server + every service as a process); Ctrl-C stops it
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The commit `make bench` measures the current tree against, side by side (bench/compare.py).
BENCH_BASE ?= 33fba26

.PHONY: demo test bench up proto lint clean system-deps

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	# LivePortrait's own module code, the reference the renderer's exactness tests compare
	# against (tests only; its application dependencies are not needed).
	$(BIN)/pip install -q --no-deps mimic-head==0.1.5
	touch $(STAMP)

# espeak-ng speaks the demo and test sentences; installed from Debian's packages when missing.
system-deps:
	@command -v espeak-ng >/dev/null || { \
	  echo "installing espeak-ng (Debian package)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null; }

demo: $(STAMP) system-deps
	$(BIN)/avatarflow make-inputs --dir out/inputs
	$(BIN)/avatarflow demo --image out/inputs/portrait.png --audio out/inputs/speech.wav \
	  --out out/demo.mp4 --contact-sheet out/demo_contact.png

test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q

bench: $(STAMP) system-deps
	$(BIN)/python -m bench.compare --base $(BENCH_BASE) --out bench/results
	$(BIN)/python -m bench.run_embedded --out bench/results
	$(BIN)/python -m bench.run_cluster --out bench/results
	$(BIN)/python -m bench.profile_cluster --out bench/results
	$(BIN)/python -m bench.run_efficiency --out bench/results
	$(BIN)/python -m bench.capacity --out bench/results
	$(BIN)/python -m bench.run_soak --base 16e695e --out bench/results
	$(BIN)/python -m bench.run_takeover --out bench/results
	$(BIN)/python -m bench.run_security --out bench/results
	$(BIN)/python -m bench.run_gateway_memory --out bench/results
	$(BIN)/python -m bench.run_neural --out bench/results
	$(BIN)/python -m bench.triton_overhead --out bench/results
	$(BIN)/python -m bench.run_motion --out bench/results

up: $(STAMP)
	$(BIN)/avatarflow up

proto: $(STAMP)
	$(BIN)/python -m avatarflow.dev.protogen

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) out .pytest_cache

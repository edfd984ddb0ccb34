# Quick start (README): `make demo` and `make test`. Both install what is missing first.
BUILD ?= build
JOBS  ?= $(shell nproc)

.PHONY: all setup venv configure build demo test test-sanitize fuzz-smoke clean

all: build

setup:
	@bash scripts/setup.sh

# build/venv: Python with the pinned packages (PyTorch, nanobind, pytest) of
# python/requirements.txt, for the Python package, its tests and examples/python.
venv: setup
	@bash scripts/setup_venv.sh $(BUILD)

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release \
	  -DMIRAS_PYTHON=ON -DPython_EXECUTABLE=$(abspath $(BUILD))/venv/bin/python

# A build tree configured before the Python package existed is configured again.
configure: venv
	@grep -q '^MIRAS_PYTHON:BOOL=ON' $(BUILD)/CMakeCache.txt 2>/dev/null || rm -f $(BUILD)/build.ninja
	@$(MAKE) --no-print-directory $(BUILD)/build.ninja

build: configure
	cmake --build $(BUILD) -j $(JOBS)

demo: build
	@bash scripts/demo.sh $(BUILD)

test: build
	@bash scripts/run_tests.sh $(BUILD)

# clang-22 with ASan + UBSan in build-sanitize/ (scripts/sanitize.sh): the lit and CTest
# suites with every sanitizer report logged (the log directory must stay empty), and the
# front end's libFuzzer target for 60 s.
test-sanitize: setup
	@bash scripts/sanitize.sh test build-sanitize

fuzz-smoke: setup
	@bash scripts/sanitize.sh fuzz build-sanitize 60

clean:
	rm -rf $(BUILD) build-sanitize

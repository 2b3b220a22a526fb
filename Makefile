# The two set-up commands: `make demo` and `make test`. Each installs missing Debian packages,
# configures with CMake, builds, and runs.
BUILD ?= build
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
BUILD_TYPE ?= Release
CMAKE_FLAGS ?=

.PHONY: all deps configure build demo test bench clean

all: build

deps:
	./scripts/install-deps.sh

configure: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_FLAGS)

build: configure
	cmake --build $(BUILD) -j$(JOBS)

demo: build
	./$(BUILD)/bin/meshpipe train --model gpt-tiny --cluster cpu:2x2 --micro-batches 2 --steps 50

test: build
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

bench: build
	/usr/bin/python3 bench/step_time.py --binary $(BUILD)/bin/bench_step_time
	./$(BUILD)/bin/bench_gemm --markdown bench/results/gemm.md

clean:
	rm -rf $(BUILD)

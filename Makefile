# medusa-tp: the two commands a fresh machine needs are `make demo` and `make test`.
SHELL := /bin/bash
SWIFT ?= swift
CACHE := .cache
export MEDUSA_MODEL ?= $(CURDIR)/$(CACHE)/models/SmolLM2-135M-Instruct.Q4_1.gguf
export MEDUSA_VOCAB_DIR ?= $(CURDIR)/$(CACHE)/vocab
# Kernels are only meaningful optimised, and the tests run the real model: test the release build.
SWIFT_TEST_FLAGS := -c release -Xswiftc -enable-testing

.PHONY: setup build release demo test clean

setup:
	@scripts/setup.sh

build: setup
	$(SWIFT) build

release: setup
	$(SWIFT) build -c release

demo: release
	$(SWIFT) run -c release --skip-build medusa-worker generate --chat "Tell me the capital of France and one fact about it." --max-tokens 96 \
		--heads models/smollm2-135m-instruct-medusa

test: setup
	$(SWIFT) build $(SWIFT_TEST_FLAGS) --build-tests
	$(SWIFT) test $(SWIFT_TEST_FLAGS) --skip-build
	scripts/test-server.sh

clean:
	rm -rf .build

# toxtun: the two commands of the README.
#   make demo   run the demo
#   make test   every check CI runs (formatting, lints, core purity, size rules, all tests)
# Both install what is missing first (scripts/install-deps).

CARGO ?= cargo

.PHONY: demo core-demo test deps lint purity sizes bench man deb help

help:
	@echo "make demo   run the demo"
	@echo "make test   run every check and test, as CI does"
	@echo "make bench  run the benchmarks and print their ratios"

deps:
	@scripts/install-deps

demo: deps
	$(CARGO) run --release -p toxtun-tokio --bin toxtun -- demo

core-demo:
	$(CARGO) run --release -p toxtun-proto --features testing --example core_demo

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

purity:
	.ci/check-core-purity

# The layout's size rules (ARCHITECTURE.md): files and functions that grew too long.
sizes:
	scripts/check-sizes

test: SHELL := /bin/bash
test: lint purity sizes
	@mkdir -p target
	set -o pipefail; $(CARGO) test --workspace 2>&1 | tee target/test.log
	@scripts/summarize-tests target/test.log

# Manual pages (toxtun.1, toxtun-<subcommand>.1, toxtun.toml.5) into target/man.
man: deps
	$(CARGO) run -q -p toxtun-tokio --bin toxtun -- manpages target/man

# The Debian package (binary, systemd unit, /etc/toxtun/server.toml, man pages,
# completions) into target/deb.
deb: deps
	scripts/build-deb target/deb

bench: deps
	$(CARGO) bench -p toxtun-proto --bench core

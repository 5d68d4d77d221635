# The two commands a newcomer needs (see README.md):
#   make demo   set up, then bring up a one-node lab and show pods talking
#   make test   set up, then lint, type-check and run every test
.PHONY: setup demo test bench clean

setup:
	@scripts/setup.sh

demo: setup
	@.venv/bin/pylium lab demo

test: setup
	@scripts/test.sh

bench: setup
	@.venv/bin/pylium bench cni

clean:
	rm -rf .venv src/pylium/datapath/bpf/*.o

# Developer entry points; each script sets up what it needs first.
# Extra pytest arguments: make test ARGS="-k pool -x"

.PHONY: test test-pythons sanitize demo wheel

test:
	bash scripts/test.sh $(ARGS)

test-pythons:
	bash scripts/test-pythons.sh -- $(ARGS)

sanitize:
	bash scripts/sanitize.sh $(ARGS)

demo:
	bash scripts/demo.sh

wheel:
	bash scripts/build-wheel.sh

# Developer entry points; each script sets up what it needs first.
# Extra pytest arguments: make test ARGS="-k pool -x"

.PHONY: test sanitize demo

test:
	bash scripts/test.sh $(ARGS)

sanitize:
	bash scripts/sanitize.sh $(ARGS)

demo:
	bash scripts/demo.sh

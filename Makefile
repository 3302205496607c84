# ovnk developer entry points. `make test` is what CI runs (.ci/run).
PY := .venv/bin/python
PYTEST_ARGS ?=
# e.g. SANDBOX_FLAGS=--prefix=other: a demo sandbox beside the default one (hack/trixie-check.sh)
SANDBOX_FLAGS ?=

.PHONY: setup test lint typecheck pytest unit functional e2e demo clean image chart-e2e

setup:
	@hack/setup.sh

test: setup lint typecheck pytest

lint: setup
	.venv/bin/ruff check core cni plugins ovnk lab tests bench
	bash -n hack/*.sh
	shellcheck -S warning hack/*.sh

typecheck: setup
	hack/typecheck.sh

pytest: setup
	$(PY) -m pytest $(PYTEST_ARGS)

unit: setup
	$(PY) -m pytest tests/unit tests/contract $(PYTEST_ARGS)

# The ovnk image (hack/Containerfile's content) built without a daemon; cached by source hash.
image: setup
	hack/build-image.sh

# The chart deployed for real on a sandbox (builds the image when the sources changed: minutes).
# Not part of `make test`: every source change makes the next run rebuild the image.
chart-e2e: setup
	OVNK_CHART_E2E=1 $(PY) -m pytest tests/chart/test_image_build.py tests/e2e/test_chart_deploy.py $(PYTEST_ARGS)

demo: setup
	.venv/bin/ovnk sandbox $(SANDBOX_FLAGS) demo

clean:
	rm -rf .venv build *.egg-info

# ovnk developer entry points. `make test` is what CI runs (.ci/run).
PY := .venv/bin/python
PYTEST_ARGS ?=
# e.g. SANDBOX_FLAGS=--prefix=other: a demo sandbox beside the default one (hack/trixie-check.sh)
SANDBOX_FLAGS ?=

.PHONY: setup e2e-tools test lint typecheck pytest unit functional e2e demo conformance clean image chart-e2e

setup:
	@hack/setup.sh

# Kubernetes' own e2e suite (e2e.test, agnhost, ginkgo), built once per machine (~12 min cold):
# not part of setup, so a cold `make demo` does not pay for it.
e2e-tools: setup
	hack/build-kube-e2e.sh

test: setup e2e-tools lint typecheck pytest

lint: setup
	.venv/bin/ruff check core cni plugins ovnk lab tests bench
	bash -n hack/*.sh
	shellcheck -S warning hack/*.sh

typecheck: setup
	hack/typecheck.sh

pytest: setup
	$(PY) -m pytest --durations=40 $(PYTEST_ARGS)

unit: setup
	$(PY) -m pytest tests/unit tests/contract $(PYTEST_ARGS)

# The ovnk image (hack/Containerfile's content) built without a daemon, in two layers: the base
# (Debian packages, requirements; minutes, cached by the Containerfile/requirements hash) and the
# ovnk layer (seconds, cached by the source hash).
image: setup
	hack/build-image.sh

# The chart deployed for real on a sandbox, alone: image (ovnk layer rebuilt in seconds after a
# source change), helm install, plugin toggle with a third-party plugin, an OVS restart, RBAC
# audit, uninstall (~8 min). Part of `make test` too; OVNK_CHART_E2E=0 skips it in a quick run.
chart-e2e: setup
	$(PY) -m pytest tests/chart/test_image_build.py tests/e2e/test_chart_deploy.py $(PYTEST_ARGS)

demo: setup
	.venv/bin/ovnk sandbox $(SANDBOX_FLAGS) demo

# The full [sig-network] run of Kubernetes' e2e suite on a sandbox of its own (docs/conformance.md).
# CONFORMANCE_FLAGS, e.g. --quick or --focus REGEX, go to `ovnk sandbox conformance`.
CONFORMANCE_FLAGS ?=
conformance: setup e2e-tools
	hack/conformance.sh $(CONFORMANCE_FLAGS)

clean:
	rm -rf .venv build *.egg-info

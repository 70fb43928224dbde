# The two commands of the README. Both do their own set-up (scripts/setup.sh).
.PHONY: up test setup bench lint
SHELL := /bin/bash

up:                ## pulumi up of the example stack (STACK=dev) on the local engine
	@PULUMI_DBOS_SETUP_S3=0 scripts/setup.sh
	@scripts/up.sh

test: setup        ## the whole test suite (unit, integration, e2e, reliability)
	@scripts/test.sh $(ARGS)

setup:
	@scripts/setup.sh

bench: setup
	@source .state/env && python bench/provision.py && python bench/restore.py && python bench/restore_window.py && python bench/restore_under_writes.py && python bench/restore_from_repo.py && python bench/scale.py && python bench/deploy.py && python bench/preview_environment.py && python bench/serve_fairness.py

lint: setup
	@source .state/env && ruff check provider tests stacks bench && mypy

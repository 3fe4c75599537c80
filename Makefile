# EdgeFleet developer commands. Every target creates the environment it needs on first use.
#   make demo    the console on a live simulated fleet playing a story (README, Demo)
#   make test    ruff + mypy + the whole test suite, in both TFLite runtimes
#   make bench   the benchmarks (figures printed as ratios measured in one run; the agent
#                daemon is measured on both TFLite runtimes)
#   make flake-check  the integration tests FLAKE_RUNS times (default 5) with every core
#                loaded by a busy loop; lists every test that failed in any run
#   make soak    the fault-injection soak (README, Reliability): SOAK_AGENTS agents for
#                SOAK_DURATION seconds on Mosquitto (production configuration), then on
#                the embedded broker; figures in soak-mosquitto.json, soak-embedded.json

PYTHON        ?= python3
# tflite-runtime has wheels only up to CPython 3.11: its environment uses 3.11.
PYTHON_TFLITE ?= python3.11
VENV          := .venv
VENV_TFLITE   := .venv-tflite
PIP_FLAGS     := --quiet --disable-pip-version-check
PYTEST_FLAGS  ?=
# pytest-xdist workers; each test file runs whole on one worker (--dist loadfile), so a
# file's fixtures (brokers, hubs, fleets) are never split. TEST_WORKERS=0 runs serially.
TEST_WORKERS  ?= 2
XDIST         := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)
# Where the runtime-facing tests live (the hub API tests need the hub extra, absent there).
RUNTIME_TESTS := tests/modelkit tests/test_bundle.py tests/test_tf_models.py tests/test_cli.py tests/agent

.PHONY: demo test lint typecheck pytest pytest-tflite bench flake-check soak clean

FLAKE_RUNS    ?= 5
SOAK_SEED     ?= 1
SOAK_DURATION ?= 600
SOAK_AGENTS   ?= 50
SOAK_FLAGS    = --seed $(SOAK_SEED) --duration $(SOAK_DURATION) --agents $(SOAK_AGENTS)

# setup.py and the C source: the agent's native hot path is built at install time.
$(VENV)/.installed: pyproject.toml setup.py edge_agent/inference/_hotpath.c Makefile
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_FLAGS) --upgrade pip
	$(VENV)/bin/pip install $(PIP_FLAGS) -e '.[dev]'
	touch $@

# The second environment: the agent on tflite-runtime (NumPy 1.x), for the runtime-facing tests.
$(VENV_TFLITE)/.installed: pyproject.toml setup.py edge_agent/inference/_hotpath.c Makefile
	$(PYTHON_TFLITE) -m venv $(VENV_TFLITE)
	$(VENV_TFLITE)/bin/pip install $(PIP_FLAGS) --upgrade pip
	$(VENV_TFLITE)/bin/pip install $(PIP_FLAGS) -e '.[agent-tflite,modelkit]' pytest pytest-timeout pytest-xdist hypothesis amqtt
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/edgefleet demo

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

# The tflite-runtime environment first: the end-to-end fixture rollout runs one agent in it.
pytest: $(VENV)/.installed $(VENV_TFLITE)/.installed
	$(VENV)/bin/pytest $(XDIST) $(PYTEST_FLAGS)

pytest-tflite: $(VENV_TFLITE)/.installed
	EDGEFLEET_TFLITE_RUNTIME=tflite-runtime $(VENV_TFLITE)/bin/pytest -m runtime $(XDIST) $(PYTEST_FLAGS) $(RUNTIME_TESTS)

test: lint typecheck pytest pytest-tflite

bench: $(VENV)/.installed $(VENV_TFLITE)/.installed
	$(VENV)/bin/python -m benchmarks

flake-check: $(VENV)/.installed
	$(VENV)/bin/python -m tests.flake_check --runs $(FLAKE_RUNS)

# Both runs happen; the target fails if either broke an invariant.
soak: $(VENV)/.installed
	status=0; \
	$(VENV)/bin/python -m benchmarks.soak $(SOAK_FLAGS) --broker mosquitto --out soak-mosquitto.json || status=1; \
	$(VENV)/bin/python -m benchmarks.soak $(SOAK_FLAGS) --broker embedded --out soak-embedded.json || status=1; \
	exit $$status

clean:
	rm -rf $(VENV) $(VENV_TFLITE) .pytest_cache .mypy_cache .ruff_cache demo-work

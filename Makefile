# Every target creates .venv and installs reelflow into it first, so each works on a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# torch and torchvision are installed first, pinned: on the development machines pip takes these
# two from local files. Elsewhere pip downloads them; override TORCH_SPEC to pick another build.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

.PHONY: venv demo test test-fast bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# The demo classifies a real video (shared/ beside the checkout) or, on a bare clone, a synthetic
# one. It tries the official Kinetics weights and, offline, says so and falls back to random ones.
DEMO_VIDEO ?= $(firstword $(wildcard ../shared/data/videos/mm_demo.mp4) demo/synthetic.mp4)

demo: venv
	@[ -f "$(DEMO_VIDEO)" ] || $(PY) -m pipelines.synthetic $(DEMO_VIDEO) --seconds 10
	$(VENV)/bin/reelflow classify $(DEMO_VIDEO) --weights kinetics || { \
	  echo "*** make demo: official weights unavailable, FALLING BACK TO RANDOM WEIGHTS (labels are meaningless) ***"; \
	  $(VENV)/bin/reelflow classify $(DEMO_VIDEO) --weights none; }

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: venv
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench: venv
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) demo benchmarks/corpus

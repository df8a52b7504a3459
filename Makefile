# One command each: `make demo` (score the bundled sample calls) and `make test`.
# Both create the virtualenv in .venv on first use.

VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
# Debian packages the tests and reports need (browser tests, Chinese fonts, Postgres, audio tools).
APT_PACKAGES := chromium fonts-noto-cjk postgresql sox

.PHONY: demo test bench system-deps clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) --upgrade pip
	# The CPU build of torch: a bare `torch` would pull a multi-GB CUDA build.
	$(PIP) torch==2.13.0
	# Their declared dependencies are broken here (Resemblyzer: source-only webrtcvad and a
	# `typing` that shadows the standard module; openai-whisper: triton), so the packages go in
	# with --no-deps and pyproject.toml lists what they need.
	$(PIP) --no-deps Resemblyzer==0.1.4 openai-whisper==20250625
	$(PIP) -e ".[test,train]"
	touch $@

system-deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

demo: $(VENV)/.installed
	$(VENV)/bin/callqa score samples/calls --meta samples/agents.csv --out out/demo
	@echo "open out/demo/calls/telecom_bad_interrupt_01.html in a browser"

test: system-deps $(VENV)/.installed
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_text.py

clean:
	rm -rf $(VENV) out

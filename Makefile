# The two commands of the README: `make demo` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The torch build this project is tested with; override on machines with another wheel
# (e.g. `make demo TORCH_SPEC="torch torchvision"`).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STUDY ?= studies/digits_cnn.yaml

.PHONY: demo test lint clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/hpo run $(STUDY)

# The report's browser test drives Debian's chromium: install it where apt-get can.
test: $(VENV)/.installed
	@command -v chromium >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1 || \
		(export DEBIAN_FRONTEND=noninteractive; apt-get -qq update && apt-get -qq install -y chromium) || \
		echo "make: could not install chromium; the report's browser test will be skipped"
	$(BIN)/python -m pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache

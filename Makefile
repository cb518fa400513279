# The two commands of the README: `make demo` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The torch build this project is tested with; override on machines with another wheel
# (e.g. `make demo TORCH_SPEC="torch torchvision"`).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STUDY ?= studies/digits_cnn.yaml

.PHONY: demo transfer-demo replay-demo coursework pathologies test lint clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/hpo run $(STUDY)

# Offline transfer learning: ResNet-18 pretrained from scratch on digits 0-4 (a study,
# its best config exported and retrained to convergence, 15 epochs), then fine-tuned on
# digits 5-9 by three strategies; last, the best fine-tuning config retrained from the
# source weights and from scratch at equal epochs (8), 6 seeds, with 5 and 10 labelled
# examples per class and the whole training split: one table of paired tests and one
# figure (results/digits59_resnet_transfer/compare, shown in the study's report), and
# what the fine-tuned model looks at (hpo inspect). About 19 minutes on 2 CPU cores,
# install included (docs/benchmarks.md).
SOURCE := results/digits04_resnet_source
TRANSFER := results/digits59_resnet_transfer
transfer-demo: $(VENV)/.installed
	$(BIN)/hpo run studies/digits04_resnet_source.yaml
	$(BIN)/hpo export $(SOURCE) --out $(SOURCE)/best.yaml
	$(BIN)/hpo retrain $(SOURCE)/best.yaml --epochs 15 --seeds 0 --out $(SOURCE)/source-model \
		--set patience=0
	$(BIN)/hpo run studies/digits59_resnet_transfer.yaml
	$(BIN)/hpo export $(TRANSFER) --out $(TRANSFER)/best.yaml
	$(BIN)/hpo retrain $(TRANSFER)/best.yaml --epochs 8 --seeds 0-5 --out $(TRANSFER)/compare \
		--set patience=0 --labels-per-class 5,10,all \
		--variant finetuned: --variant scratch:weights=none,freeze=all
	$(BIN)/hpo inspect $(TRANSFER)/compare/all/finetuned

# Strategies over 50 seeds in minutes: record the default study's learning curves once
# (200 configs × its 3 seeds, 8-14 minutes on 2 CPU cores), replay its eight strategies
# × 50 seeds on them (about 2 minutes with the report and its many-seeds section).
replay-demo: $(VENV)/.installed
	$(BIN)/hpo tabulate $(STUDY)
	$(BIN)/hpo replay $(STUDY) --seeds 0-49

# The coursework's ready comparison studies (compare:), one after another, each with its
# report; 20-25 minutes together on 2 CPU cores (docs/benchmarks.md).
COURSEWORK := optimizers regularization lenet5_normalization lr_range logistic_lr
coursework: $(VENV)/.installed
	for study in $(COURSEWORK); do $(BIN)/hpo run studies/$$study.yaml || exit 1; done

# The gradient-pathology studies (vanishing gradients, dying ReLU, toy convergence, one
# neuron's landscape), each with its report (docs/benchmarks.md has their timings).
PATHOLOGIES := vanishing_gradients vanishing_gradients_init dying_relu toy_convergence \
	toy_lines toy_detection neuron_landscape
pathologies: $(VENV)/.installed
	for study in $(PATHOLOGIES); do $(BIN)/hpo run studies/$$study.yaml || exit 1; done

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

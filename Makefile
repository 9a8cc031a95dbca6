# make demo       : install what is needed, then the pipeline preset experiments/pipeline/demo.yaml (CPU, < 15 min)
# make demo-multi : the same with experiments/pipeline/demo_multi.yaml (four lifters, leave-one-out; < 30 min)
# make benchmark : the paper's claims on the miniature over 5 paired seeds, with their intervals (53-62 min on 2 CPU cores, 54 the last time)
# make benchmark-long : the same with the experiment file's fine-tuning schedule itself (a GPU preset: 8-9 h on 2 CPU cores)
# make test   : install what is needed, then run the test suite
# make bench  : benchmarks/decode.py (figures also in output/benchmarks/decode.json)
# make gpu-check : benchmarks/gpu_check.sh, the one command on a new GPU machine (docs/scaling.md)
PYTHON ?= python3
PIP := $(PYTHON) -m pip --disable-pip-version-check

.PHONY: install demo demo-multi benchmark benchmark-long test bench gpu-check

# Never replaces a torch you already have (e.g. a CUDA build); one older than the code needs
# stops here with one line (lib/utils/versions.py). Without one, the CPU build 2.13.0 is tried
# first (a local wheel on the reference machines), then any torch.
install:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install -q torch==2.13.0 || $(PIP) install -q torch
	@$(PYTHON) -m lib.utils.versions
	@$(PIP) install -q -r requirements.txt

demo: install
	$(PYTHON) run/reproduce.py --preset experiments/pipeline/demo.yaml

demo-multi: install
	$(PYTHON) run/reproduce.py --preset experiments/pipeline/demo_multi.yaml

benchmark: install
	$(PYTHON) run/reproduce.py --preset experiments/pipeline/benchmark.yaml

benchmark-long: install
	$(PYTHON) run/reproduce.py --preset experiments/pipeline/benchmark_long.yaml

test: install
	$(PYTHON) -m pytest -q tests

bench: install
	$(PYTHON) benchmarks/decode.py --json-out output/benchmarks/decode.json

gpu-check: install
	PYTHON=$(PYTHON) bash benchmarks/gpu_check.sh

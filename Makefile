# Two entry points: `make demo` and `make test`. Both build .venv from the committed lock
# (torch pinned to the CPU 2.13.0 build through env/constraints.txt) on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The GPU venv: TensorFlow 2.17.1's analyzer (export/gates/analyzer.py) and ai-edge-litert 2.3's
# GPU accelerator (runtime/gpu_worker.py), apart from the main venv's onnx2tf pins
CHECKER := .venv-gpucheck
CHECKER_STAMP := $(CHECKER)/.installed
# a software Vulkan device for that accelerator (SwiftShader, from Debian's chromium-common)
VULKAN_STAMP := .vulkan/.installed
# the second converter, litert-torch (export/build/litert_torch.py): numpy 2 and
# ai-edge-litert 2.3, apart from the main venv's onnx2tf pins; about 2 GB
LITERT_TORCH := .venv-litert-torch
LITERT_TORCH_STAMP := $(LITERT_TORCH)/.installed

# the demo's generated clip (mvos-synth --kind scene, a seed no training or test set
# uses: three objects and a look-alike distractor) and the model it runs
DEMO_MODEL := export/mobilenetv2-noaspp_q2_480x864
DEMO_CLIP := results/synth/JPEGImages/480p/synth
DEMO_MASK := results/synth/Annotations/480p/synth/00000.png
DEMO_TRUTH := results/synth/Annotations/480p

.PHONY: demo test lint venv gpu-venv gpu-checker vulkan litert-torch-venv clean

venv: $(STAMP) $(CHECKER_STAMP) $(VULKAN_STAMP)

litert-torch-venv: $(LITERT_TORCH_STAMP)

$(LITERT_TORCH_STAMP): env/requirements-litert-torch.lock.txt env/constraints.txt
	test -x $(LITERT_TORCH)/bin/python || $(PYTHON) -m venv $(LITERT_TORCH)
	$(LITERT_TORCH)/bin/python -m pip install --quiet --disable-pip-version-check \
		-c env/constraints.txt -r env/requirements-litert-torch.lock.txt
	touch $@

gpu-venv gpu-checker: $(CHECKER_STAMP)

vulkan: $(VULKAN_STAMP)

$(VULKAN_STAMP): env/get-swiftshader.sh
	env/get-swiftshader.sh .vulkan
	touch $@

$(CHECKER_STAMP): env/requirements-gpucheck.lock.txt
	test -x $(CHECKER)/bin/python || $(PYTHON) -m venv $(CHECKER)
	$(CHECKER)/bin/python -m pip install --quiet --disable-pip-version-check \
		-r env/requirements-gpucheck.lock.txt
	touch $@

$(STAMP): env/requirements.lock.txt env/constraints.txt setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		-c env/constraints.txt -r env/requirements.lock.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		--no-deps --no-build-isolation -e .
	touch $@

demo: $(STAMP) $(CHECKER_STAMP) $(VULKAN_STAMP)
	$(BIN)/mvos-info --size 480x864 --queue 2
	$(BIN)/mvos-export --queue 2 --size 480x864
	$(BIN)/mvos-bench --queue 2 --size 480x864 --runs 10 --warmup 2 \
		--results results/host.csv --plot results/host.png
	$(BIN)/mvos-synth --out results/synth --kind scene --seed 200000 --frames 24 --size 480x854 \
		--replace
	$(BIN)/mvos-run --model $(DEMO_MODEL) --backend torch --frames $(DEMO_CLIP) \
		--mask $(DEMO_MASK) --out results/run/torch/synth
	$(BIN)/mvos-run --model $(DEMO_MODEL) --backend tflite --precision fp16 \
		--frames $(DEMO_CLIP) --mask $(DEMO_MASK) --out results/run/tflite_fp16/synth \
		--overlay results/run/overlay.png
	@echo "== PyTorch vs the generated truth"
	$(BIN)/mvos-eval --results results/run/torch --annotations $(DEMO_TRUTH)
	@echo "== TFLite fp16 vs the generated truth"
	$(BIN)/mvos-eval --results results/run/tflite_fp16 --annotations $(DEMO_TRUTH)
	@echo "== TFLite fp16 vs PyTorch"
	$(BIN)/mvos-eval --results results/run/tflite_fp16 --reference results/run/torch
	@echo "== copying the first mask (baseline) vs the generated truth"
	$(BIN)/mvos-eval --baseline copy-first --annotations $(DEMO_TRUTH)

lint: $(STAMP)
	$(BIN)/ruff check mobilevos_deploy tests

# pytest exits 5 when it collects no test; that is not a failure of the suite.
test: $(STAMP) $(CHECKER_STAMP) $(VULKAN_STAMP) $(LITERT_TORCH_STAMP)
	$(BIN)/python -m pytest -q --durations=20; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

clean:
	rm -rf $(VENV) $(CHECKER) $(LITERT_TORCH) .vulkan build *.egg-info

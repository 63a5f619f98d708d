#!/usr/bin/env bash
# CUDA checks for flopgap, run as one short script on a machine with a GPU.
#
#   OUT=/tmp/cuda_out bash benchmarks/cuda_check.sh
#   OUT=/tmp/cuda_out STEPS="env machine explain unit" bash benchmarks/cuda_check.sh   # some steps
#
# Uses the python3 found on PATH (the GPU image's, which has torch + torchvision) with
# src/ on PYTHONPATH; SQLAlchemy is installed from .whl/ when it is missing (an offline
# GPU machine: fetch it beforehand with `python3 -m pip download --no-deps
# --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 -d .whl
# sqlalchemy==2.1.9` and carry .whl, which .git/info/exclude keeps out of the repo). Each step
# has its own time limit so one hang cannot eat the device lease. Everything lands in
# $OUT/cuda_check.tgz: log.txt (all output) and the JSON results of each CLI step. Steps:
#   0. environment (GPU, torch, driver)
#   1. flopgap time on CUDA (resnet18, the seed's ex2-deep)
#   2. flopgap's timer interleaved with torch.utils.benchmark and a bare CUDA-event loop
#   3. flopgap machine --device cuda --quick (peak FLOP/s per dtype, bandwidth, launch latency)
#   4. flopgap explain on CUDA: kernel launches counted, GPU busy vs idle, classes, findings
#   5. flopgap predict --device cuda --measure on five models
#   5b. (fullmachine, fullpredict) the full CUDA profile, and predict --measure on six models, twice each
#   6. flopgap variants on CUDA: bf16, fp16, channels_last, compile, compile-cudagraphs
#   7. the unit tests of the timer, the profiler join and the machine profile, with CUDA present
set -u
OUT=${OUT:-/tmp/flopgap_cuda}
mkdir -p "$OUT"
LOG="$OUT/log.txt"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" COLUMNS=160
export FLOPGAP_CACHE_DIR="/tmp/flopgap_cache"  # machine-profile cache, off $HOME
PY=${PY:-python3}
FG="$PY -m flopgap.cli"

step() {  # step NAME SECONDS CMD...: run with a limit, log everything, never abort the script
  local name=$1 limit=$2; shift 2
  if [ -n "${STEPS:-}" ] && [[ " $STEPS " != *" ${name%%-*} "* ]]; then return; fi  # STEPS="machine explain"
  echo "=== $name ($(date -u +%H:%M:%S), limit ${limit}s)" | tee -a "$LOG"
  local t0=$SECONDS
  timeout --signal=INT --kill-after=15 "$limit" "$@" >>"$LOG" 2>&1
  local rc=$?
  echo "=== $name: rc=$rc in $((SECONDS - t0)) s" | tee -a "$LOG"
}

if ! $PY -c "import sqlalchemy" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

step env 30 $PY - <<'EOF'
import torch, torchvision, platform
print("torch", torch.__version__, "cuda", torch.version.cuda, "torchvision", torchvision.__version__, "python", platform.python_version())
print("gpu", torch.cuda.get_device_name(0), torch.cuda.get_device_properties(0))
EOF

step time-resnet18 60 $FG time torchvision:resnet18 --device cuda --max-time 8 --json "$OUT/time_resnet18.json"
step time-ex2-deep 45 $FG time seed:ex2-deep --device cuda --max-time 5 --json "$OUT/time_ex2.json"

step reference-timers 75 $PY - <<'PYEOF'
# flopgap's median beside torch.utils.benchmark and a bare CUDA-event loop, interleaved in
# one process (three rounds), so that drift of the host between them shows as drift
import statistics, torch, torchvision
from torch.utils import benchmark
from flopgap.timing import TimerOptions, measure
m = torchvision.models.resnet18().eval().cuda(); x = torch.randn(1, 3, 224, 224, device="cuda")
with torch.inference_mode():
    for _ in range(50): m(x)
    torch.cuda.synchronize()
for rnd in range(3):
    fg = measure(m, (x,), TimerOptions(device="cuda", max_time=3))
    with torch.inference_mode():
        t = benchmark.Timer("m(x)", globals={"m": m, "x": x}).blocked_autorange(min_run_time=1.5)
        ev = []
        for _ in range(150):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(); s.record(); m(x); e.record(); torch.cuda.synchronize(); ev.append(s.elapsed_time(e))
    print(f"round {rnd}: flopgap median {fg.median*1e3:.4f} ms (CI {fg.ci_low*1e3:.4f}..{fg.ci_high*1e3:.4f}, "
          f"device {fg.device_median*1e3:.4f}, dispatch {fg.dispatch_median*1e3:.4f}, {fg.calls} calls); "
          f"torch.utils.benchmark median {t.median*1e3:.4f} ms; CUDA-event loop median {statistics.median(ev):.4f} ms")
PYEOF

step machine 90 $FG machine --device cuda --quick --refresh --json "$OUT/machine.json"
step explain-ex2-deep 60 $FG explain seed:ex2-deep --device cuda --quick-machine --max-time 3 --json "$OUT/explain_ex2.json"
step explain-resnet18 60 $FG explain torchvision:resnet18 --device cuda --quick-machine --max-time 3 --json "$OUT/explain_resnet18.json"
step explain-resnet50 60 $FG explain torchvision:resnet50 --device cuda --quick-machine --max-time 3 --json "$OUT/explain_resnet50.json"
# the CUDA prediction: per-op floors (roofline, host cost of a tiny op per family) with the
# in-sequence scale and per-op cost fitted on the profile's chains, timed on the GPU
for m in seed:ex2-deep torchvision:resnet18 torchvision:resnet50 torchvision:mobilenet_v2 torchvision:convnext_tiny; do
  step "predict-${m#*:}" 45 $FG predict "$m" --device cuda --quick-machine --measure --max-time 2 \
    --json "$OUT/predict_${m#*:}.json"
done
# the full CUDA profile (18 chains in 3 rounds, larger micro-benchmarks), then each model
# predicted and measured in two processes per model, in two interleaved rounds: the host's
# speed can move between processes, so each model is measured in two
step fullmachine 150 $FG machine --device cuda --refresh --json "$OUT/machine_full.json"
for r in 1 2; do
  for m in seed:ex2-deep torchvision:resnet18 torchvision:resnet50 torchvision:mobilenet_v2 \
           torchvision:convnext_tiny torchvision:efficientnet_b0; do
    step "fullpredict-${m#*:}-$r" 45 $FG predict "$m" --device cuda --measure --max-time 2 \
      --json "$OUT/fullpredict_${m#*:}_$r.json"
  done
done
step variants 150 $FG variants torchvision:resnet18 --device cuda --try eager,bf16,fp16,channels_last,compile,compile-cudagraphs \
  --batch 1,32 --max-time 2 --json "$OUT/variants_resnet18.json"
step unit-tests 90 $PY -m pytest -q -x -p no:cacheprovider tests/test_timing_timer.py tests/test_explain_join.py \
  tests/test_machine_profile.py tests/test_explain_predict.py tests/test_explain_roofline.py
echo "done $(date -u +%H:%M:%S)" | tee -a "$LOG"
# one archive: the device tool brings back a limited number of files
(cd "$OUT" && tar czf /tmp/cuda_check.tgz . && find . -mindepth 1 -delete && mv /tmp/cuda_check.tgz .)

#!/usr/bin/env bash
# The prepared check for a machine with one NVIDIA GPU: every CUDA path of the project, timed,
# under one global deadline of DEADLINE_S seconds (default 420, 7 minutes). It writes at most
# 8 files into OUT_DIR (summary.txt, log.txt, train_log.jsonl) and prints the summary last.
#
#     bash benchmarks/gpu_check.sh OUT_DIR            # from the repository root
#
# GPU time comes in one short lease, so the steps run most important first, and each step's
# limit is its own (the `run NAME SECONDS` lines below) capped by the time left before the
# deadline; a step that would get under 5 s is skipped, and said so. `timeout -k` kills a step
# that ignores SIGTERM (train.py catches it to save a checkpoint) KILL_AFTER seconds later.
# tests/test_gpu_check.py reads the limits below and checks that they fit the deadline.
# 1. the CUDA tests of the suite (tests/test_cuda.py)
# 2. train-step img/s, bf16, U-Net + PatchGAN + VGG19 at 256x256, batch 16 (benchmarks/bench_train_step.py)
# 3. a 300-step bf16 training run with --sync_debug (any host-device sync inside a step raises)
#    whose losses must fall (benchmarks/gpu_train_check.py)
# 4. the train step in fp32, bf16 + channels_last, and bf16 at batch 64 (at batch 16 the step is
#    bound by Python's launch overhead); TFLOP/s against the peak of the step's own precision
# 5. test.py frames per second at 256x256 on 1920x1080 frames (benchmarks/bench_infer.py)
# 6. the default training sample's loader rate with cached flows, 16 workers (benchmarks/bench_data.py)
# SMOKE=1 DEVICE=cpu runs the same script with tiny sizes on a CPU, to check the script itself
# (leaving out two train-step rows that differ from others by their flags alone); tests/
# test_gpu_check.py runs it so, with LIMIT_SCALE (default 1) multiplying every step's limit, so
# that a busy CPU does not decide its verdict.
# Python is $PYTHON, else python3. Packages the machine lacks travel as wheels in .whl/ (an
# ignored folder named in the device tool's carry), installed into /tmp/site first. Nothing here
# needs imageio-ffmpeg, and PNG frames need no pyspng (utils.py reads them with OpenCV without
# it: the same pixels, slower). To time the loader with pyspng as on the CPU, carry its wheel
# (numpy, its one requirement, is there):
#   echo /.whl/ >> .git/info/exclude; python3 -m pip download --no-deps --only-binary=:all: \
#     --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
#     -d .whl pyspng==0.1.4          # pyspng-0.1.4-cp312-cp312-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl
# The loader rate is taken on synthetic frames (--synthetic): ../shared, whose clips the CPU
# figures use, does not travel to the GPU machine and its anime clips may not be copied into
# the project; the README gives the CPU's rate on the same synthetic frames to compare with.
set -uo pipefail
OUT=${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
DEADLINE_S=${DEADLINE_S:-420}
KILL_AFTER=${KILL_AFTER:-3}
LIMIT_SCALE=${LIMIT_SCALE:-1}
if [ "${SMOKE:-0}" = 1 ]; then
  SIZE=32; BATCH=1; BIG_BATCH=2; REPS="1 --warmup 1"; FRAMES=2; FRAME_SIZE=160x90
  DATA="--frames 6 --shots 2 --batch_size 4 --workers 1 --repeat 1 --only full --synthetic"
  STEPS=20; TRAIN_EXTRA="--device $DEVICE --image_size 32 --batch_size 2 --workers 0"
else
  SIZE=256; BATCH=16; BIG_BATCH=64; REPS=10; FRAMES=30; FRAME_SIZE=1920x1080
  DATA="--frames 200 --shots 4 --workers 16 --repeat 1 --only full --synthetic"
  STEPS=300; TRAIN_EXTRA=""
fi
mkdir -p "$OUT"
: > "$OUT/summary.txt"; : > "$OUT/log.txt"
export PYTHONUNBUFFERED=1 TCVC_CACHE_DIR="${TMPDIR:-/tmp}/tcvc_gpu_check_cache"
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
START=$SECONDS
status=0
step() { echo; echo "=== $*" | tee -a "$OUT/summary.txt"; }
run() {  # run NAME SECONDS CMD...: output appended to OUT/log.txt, its figures to the summary
  local name=$1 limit=$(($2 * LIMIT_SCALE)); shift 2
  local left=$((DEADLINE_S - (SECONDS - START) - KILL_AFTER))
  [ "$limit" -le "$left" ] || limit=$left
  if [ "$limit" -lt 5 ]; then
    echo "SKIPPED (deadline of ${DEADLINE_S} s reached): $name" | tee -a "$OUT/summary.txt"; status=1; return
  fi
  local part="$OUT/.part.txt" began=$SECONDS
  echo "##### $name (limit ${limit} s)" >> "$OUT/log.txt"
  timeout -k "$KILL_AFTER" "$limit" "$@" > "$part" 2>&1
  local rc=$?
  cat "$part" >> "$OUT/log.txt"
  grep -v -E "(frame|step|it)/s\]" "$part" | tail -n 8
  [ "$rc" -eq 0 ] || { echo "FAILED ($rc): $name" | tee -a "$OUT/summary.txt"; status=1; }
  grep -E "img/s|TFLOP|memory|fps|samples/s|=|passed|failed|loss|frames from|torch" "$part" \
    | grep -v -E "(frame|step|it)/s\]" | tail -n 6 >> "$OUT/summary.txt"
  echo "($name: $((SECONDS - began)) s)" >> "$OUT/summary.txt"
  rm -f "$part"
}

step "machine"
run machine 20 $PY - <<'PYEOF'
import torch, importlib.util
missing = [m for m in ("cv2", "skimage", "tqdm", "pyspng") if importlib.util.find_spec(m) is None]
where = "no CUDA GPU (a smoke run on the CPU)"
if torch.cuda.is_available():
    where = (f"{torch.cuda.get_device_name(0)}; CUDA {torch.version.cuda}; "
             f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
print(f"{where}; torch {torch.__version__}; missing packages: {', '.join(missing) or 'none'} (pyspng is optional)")
PYEOF
# Dense peaks from NVIDIA's data sheets (SXM parts), bf16 and TF32 (what fp32 convolutions and
# matrix products run as under train.py's TF32 setting); unknown cards get no share.
GPU=$(grep -m 1 -E "torch" "$OUT/summary.txt")
case "$GPU" in
  *H100*|*H200*|*H800*|*GH200*) PEAK_BF16=989; PEAK_TF32=494 ;;
  *A100*|*A800*) PEAK_BF16=312; PEAK_TF32=156 ;;
  *L40S*) PEAK_BF16=362; PEAK_TF32=183 ;;
  *) PEAK_BF16=""; PEAK_TF32="" ;;
esac
AMP=bf16; [ "$DEVICE" = cpu ] && AMP=off  # bf16 autocast is CUDA's
COMMON="--device $DEVICE --generator unet --image_size $SIZE --reps $REPS --no_reference"
BF16="$COMMON --amp $AMP ${PEAK_BF16:+--peak_tflops $PEAK_BF16}"

step "1. the CUDA tests"
run cuda_tests 75 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py

step "2. train step, U-Net at ${SIZE}x${SIZE}, batch $BATCH, bf16 (dense bf16 peak ${PEAK_BF16:-unknown} TFLOP/s)"
run step_bf16 40 $PY benchmarks/bench_train_step.py $BF16 --batch_size $BATCH --channels_last off

step "3. $STEPS training steps (bf16, --sync_debug on CUDA)"
run train_check 80 $PY benchmarks/gpu_train_check.py --out "$OUT" --steps $STEPS $TRAIN_EXTRA

step "4. train step: fp32 (TF32 peak ${PEAK_TF32:-unknown}), bf16 + channels_last, bf16 at batch $BIG_BATCH"
run step_fp32 40 $PY benchmarks/bench_train_step.py $COMMON --amp off --batch_size $BATCH --channels_last off \
  ${PEAK_TF32:+--peak_tflops $PEAK_TF32}
if [ "${SMOKE:-0}" = 1 ]; then  # the same command lines as the two above, with other flags
  echo "(step_bf16_cl and step_bf16_big are left out of a smoke run)" | tee -a "$OUT/summary.txt"
else
  run step_bf16_cl 30 $PY benchmarks/bench_train_step.py $BF16 --batch_size $BATCH --channels_last on
  run step_bf16_big 40 $PY benchmarks/bench_train_step.py $BF16 --batch_size $BIG_BATCH --channels_last off
fi

step "5. test.py on $FRAME_SIZE frames at ${SIZE}x${SIZE}"
run infer 30 $PY benchmarks/bench_infer.py --device $DEVICE --image_size $SIZE --frames $FRAMES --frame_size $FRAME_SIZE --skip_memory

step "6. the default training sample's loader rate, 256x256 from 640x480 frames"
run data 35 $PY benchmarks/bench_data.py $DATA

echo
echo "=== summary ($OUT/summary.txt; every step's output in $OUT/log.txt), $((SECONDS - START)) s of ${DEADLINE_S} s"
cat "$OUT/summary.txt"
exit $status

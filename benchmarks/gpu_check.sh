#!/usr/bin/env bash
# The prepared check for a machine with one NVIDIA GPU: every CUDA path of the project, timed,
# in under 8 minutes. It writes its figures into OUT_DIR and prints them.
#
#     bash benchmarks/gpu_check.sh OUT_DIR            # from the repository root
#
# 1. train-step img/s (U-Net, PatchGAN, VGG19 at 256x256, batch 16) in fp32, bf16,
#    bf16 + channels_last and + --compile; TFLOP/s and its share of the card's dense bf16 peak;
#    peak GPU memory                                  (benchmarks/bench_train_step.py)
# 2. test.py frames per second at 256x256 on 1920x1080 frames, and with --full_res
#                                                      (benchmarks/bench_infer.py)
# 3. data-loader samples/s with 8 and 16 workers, PNG and frame cache (benchmarks/bench_data.py)
# 4. the CUDA tests of the suite (tests/test_cuda.py), then a 300-step bf16 training run with
#    --sync_debug (any host-device sync inside a step raises) whose losses must fall.
# SMOKE=1 DEVICE=cpu runs the same script with tiny sizes on a CPU, to check the script itself.
# Python is $PYTHON, else python3. Packages the machine lacks (pyspng, imageio-ffmpeg) can
# travel as wheels in .whl/ (see the device notes); they are installed into /tmp/site first.
set -uo pipefail
OUT=${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
if [ "${SMOKE:-0}" = 1 ]; then
  SIZE=64; BATCH=2; REPS=2; FRAMES=4; FRAME_SIZE=320x180; DATA="--frames 20 --shots 2 --batch_size 4 --workers 1 2 --repeat 1"
  STEPS=20; TRAIN_EXTRA="--device $DEVICE --image_size 32 --batch_size 2 --workers 0"
else
  SIZE=256; BATCH=16; REPS=10; FRAMES=60; FRAME_SIZE=1920x1080; DATA="--frames 100 --shots 4 --workers 8 16 --repeat 2"
  STEPS=300; TRAIN_EXTRA=""
fi
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TCVC_CACHE_DIR="${TMPDIR:-/tmp}/tcvc_gpu_check_cache"
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
status=0
step() { echo; echo "=== $*" | tee -a "$OUT/summary.txt"; }
run() {  # run NAME SECONDS CMD...: output to OUT/NAME.txt, last lines to the summary
  local name=$1 limit=$2; shift 2
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.txt" | grep -v -E "(frame|step|it)/s\]" | tail -n 8
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || { echo "FAILED ($rc): $name" | tee -a "$OUT/summary.txt"; status=1; }
  grep -E "img/s|TFLOP|memory|fps|samples/s|=|passed|failed|loss" "$OUT/$name.txt" | grep -v -E "(frame|step|it)/s\]" \
    | tail -n 6 >> "$OUT/summary.txt"
}

step "machine"
$PY - <<'PYEOF' 2>&1 | tee "$OUT/machine.txt" | tee -a "$OUT/summary.txt"
import torch, importlib.util
if not torch.cuda.is_available():
    print(f"no CUDA GPU (a smoke run on the CPU); torch {torch.__version__}")
    raise SystemExit
name = torch.cuda.get_device_name(0)
print(f"{name}; torch {torch.__version__}; CUDA {torch.version.cuda}; "
      f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
missing = [m for m in ("cv2", "pyspng", "imageio_ffmpeg", "skimage", "tqdm") if importlib.util.find_spec(m) is None]
print("missing packages: " + (", ".join(missing) if missing else "none"))
PYEOF
# Dense bf16 peaks from NVIDIA's data sheets (SXM parts); unknown cards get no share.
GPU=$(head -n 1 "$OUT/machine.txt")
case "$GPU" in
  *H100*|*H200*|*H800*|*GH200*) PEAK=989 ;;
  *A100*|*A800*) PEAK=312 ;;
  *L40S*) PEAK=362 ;;
  *) PEAK="" ;;
esac
PEAKARG=${PEAK:+--peak_tflops $PEAK}

AMP=bf16; [ "$DEVICE" = cpu ] && AMP=off  # bf16 autocast is CUDA's
step "1. train step, U-Net at ${SIZE}x${SIZE}, batch $BATCH (dense bf16 peak: ${PEAK:-unknown} TFLOP/s)"
COMMON="--device $DEVICE --generator unet --image_size $SIZE --batch_size $BATCH --reps $REPS --no_reference $PEAKARG"
run step_fp32 90 $PY benchmarks/bench_train_step.py $COMMON --amp off --channels_last off
run step_bf16 90 $PY benchmarks/bench_train_step.py $COMMON --amp $AMP --channels_last off
run step_bf16_cl 90 $PY benchmarks/bench_train_step.py $COMMON --amp $AMP --channels_last on
[ "${SMOKE:-0}" = 1 ] || run step_bf16_cl_compile 240 $PY benchmarks/bench_train_step.py $COMMON --amp bf16 --channels_last on --compile

step "2. test.py on $FRAME_SIZE frames: ${SIZE}x${SIZE}, then --full_res"
run infer 120 $PY benchmarks/bench_infer.py --device $DEVICE --frames $FRAMES --frame_size $FRAME_SIZE --skip_memory
run infer_full_res 120 $PY benchmarks/bench_infer.py --device $DEVICE --frames $FRAMES --frame_size $FRAME_SIZE --skip_memory --full_res

step "3. data loader at 256x256 from 640x480 frames"
run data 150 $PY benchmarks/bench_data.py $DATA

step "4. CUDA tests, and $STEPS training steps (bf16, --sync_debug on CUDA)"
run cuda_tests 180 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py
run train_check 300 $PY benchmarks/gpu_train_check.py --out "$OUT" --steps $STEPS $TRAIN_EXTRA
echo
echo "=== summary ($OUT/summary.txt)"
cat "$OUT/summary.txt"
exit $status

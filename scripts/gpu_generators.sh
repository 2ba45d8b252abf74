#!/usr/bin/env bash
# Train the generators vcex ships from a GPU session, side by side on one GPU, and pack what comes back.
#
# Run from the repository root on a machine with a CUDA torch and no registry (the wheels of what is missing
# lie in .whl/), with OUT set to the folder the results go to:
#
#   OUT=/tmp/gpu-out bash scripts/gpu_generators.sh
#
# Jobs (each on the same GPU, at the same time; each writes its own folder under $RUNS):
#   faces-stylex-init     StylEx conditioned on the smiling CNN, warm-started from faces-style
#   faces-edit-medium     the edit term's CPU run d2 (docs/benchmarks/stylex-training.md, session 21: its smile
#                         coordinate met issue 27's bar) on the GPU's many more steps, warm-started from faces-style
#   faces-edit-large      the same recipe on the large config from random weights: frames one pixel wide, which the
#                         medium decoder drew as smudges, may need its width
#   mnist-diffae, faces-diffae   diffusion autoencoders sized to the budget (scripts/train_diffae.py)
# A job that fails in its first EARLY_CHECK seconds stops the whole session (exit 3), so a broken set-up costs
# little device time; at the end every job's folder is packed (optimiser states left out) with its log.
set -u
OUT=${OUT:?set OUT to the folder results go to}
MINUTES=${MINUTES:-5.5}          # StylEx training budget per job
DIFFAE_MINUTES=${DIFFAE_MINUTES:-5}
EARLY_CHECK=${EARLY_CHECK:-100}
DEADLINE=${DEADLINE:-500}        # seconds after the start: every job still running is stopped, then all is packed
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
# for a smoke test on a CPU: STYLE_EXTRA="--n-train 128" DIFFAE_EXTRA="--base-channels 8 --test 16"
STYLE_EXTRA=${STYLE_EXTRA:-}
DIFFAE_EXTRA=${DIFFAE_EXTRA:-}
RUNS=${RUNS:-/tmp/runs}
mkdir -p "$RUNS" "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1 VCEX_HOME=${VCEX_HOME:-/tmp/vcex-home} OMP_NUM_THREADS=2
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv;
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; nproc; } > "$RUNS/env.txt" 2>&1

# the CLI with cuDNN autotuning and TF32 matrix products (recorded in the docs beside the figures)
VCEX='import sys, torch
torch.backends.cudnn.benchmark = True
torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
from vcex.cli import main
sys.exit(main(sys.argv[1:]))'
# The first GPU session (2026-12-04) ran these with --preset stylegan2 (lr 2e-3 for E, G and D): every encoder
# diverged (docs/benchmarks/stylex-training.md, "On a GPU"); the CPU preset's rates (2e-4) have not; from random
# weights the CPU preset's warm-up would be a third of --epochs, so the scratch runs set ten epochs
STYLE=(train-style --dataset faces --config medium --preset cpu --batch-size 64 --epochs 400
       --max-minutes "$MINUTES" --device "$DEVICE" --quiet $STYLE_EXTRA)

declare -A PIDS
start() {  # start NAME COMMAND...: run in the background, output to $RUNS/NAME.log
    local name=$1; shift
    "$@" > "$RUNS/$name.log" 2>&1 &
    PIDS[$name]=$!
}
start faces-stylex-init "$PY" -c "$VCEX" "${STYLE[@]}" --classifier smiling --init-from faces-style \
    --set mapping_fit_steps=500 --out "$RUNS/faces-stylex-init"
# the edit term (autoencoder epochs only, as on the CPU; batch 32 as there): map B of session 21
EDIT_MAP='smile=32.conv0:10@0.5;eyeglasses=32.conv0:19;hair_color=32.conv0:0@0.5;background_warmth=32.conv0:18@0.35'
EDIT=(train-style --dataset faces --preset cpu --epochs 400 --max-minutes "$MINUTES" --device "$DEVICE" --quiet
      --set warmup_epochs=400 --set edit_weight=1 --set align_factors=4 --set align_images=16
      --set "align_map=$EDIT_MAP" $STYLE_EXTRA)
# from faces-style at d2's rates; from random weights at the autoencoder's (faces-style's) own
start faces-edit-medium "$PY" -c "$VCEX" "${EDIT[@]}" --config medium --init-from faces-style \
    --set warmup_generator_lr=0.003 --set warmup_lr=0.0005 --out "$RUNS/faces-edit-medium"
start faces-edit-large "$PY" -c "$VCEX" "${EDIT[@]}" --config large --out "$RUNS/faces-edit-large"
start mnist-diffae "$PY" scripts/train_diffae.py --dataset mnist --minutes "$DIFFAE_MINUTES" --safety 0.6 \
    --device "$DEVICE" --out "$RUNS/mnist-diffae" $DIFFAE_EXTRA
start faces-diffae "$PY" scripts/train_diffae.py --dataset faces --latent-dim 64 --minutes "$DIFFAE_MINUTES" \
    --safety 0.6 --device "$DEVICE" --out "$RUNS/faces-diffae" $DIFFAE_EXTRA
( sleep "$DEADLINE"; echo "deadline: stopping what still runs"; kill "${PIDS[@]}" 2>/dev/null ) &
WATCHDOG=$!
declare -A CODES

pack() {
    nvidia-smi > "$RUNS/nvidia-smi-end.txt" 2>&1
    for name in "${!PIDS[@]}"; do
        if [ -d "$RUNS/$name" ]; then
            tar -czf "$OUT/$name.tgz" -C "$RUNS" --exclude optimisers.pt "$name" "$name.log"
        else
            cp "$RUNS/$name.log" "$OUT/$name.log"
        fi
    done
    tar -czf "$OUT/logs.tgz" -C "$RUNS" env.txt nvidia-smi-mid.txt nvidia-smi-end.txt $(cd "$RUNS" && ls ./*.log)
}

sleep "$EARLY_CHECK"
nvidia-smi > "$RUNS/nvidia-smi-mid.txt" 2>&1
for name in "${!PIDS[@]}"; do
    if ! kill -0 "${PIDS[$name]}" 2>/dev/null; then
        wait "${PIDS[$name]}"; code=$?; CODES[$name]=$code
        if [ "$code" != 0 ]; then
            echo "job $name failed early (exit $code): stopping every job"; tail -30 "$RUNS/$name.log"
            kill "${PIDS[@]}" "$WATCHDOG" 2>/dev/null; sleep 2; pack; exit 3
        fi
    fi
done
echo "all jobs running after ${EARLY_CHECK}s"; cat "$RUNS/nvidia-smi-mid.txt" | head -25
status=0
for name in "${!PIDS[@]}"; do
    if [ -n "${CODES[$name]:-}" ]; then code=${CODES[$name]}; else wait "${PIDS[$name]}"; code=$?; fi
    echo "job $name exit $code"; tail -4 "$RUNS/$name.log"
    [ "$code" = 0 ] || status=1
done
kill "$WATCHDOG" 2>/dev/null
pack
ls -la "$OUT"
exit $status

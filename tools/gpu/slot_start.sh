#!/usr/bin/env bash
# Start generator (and parser) training in a bounded GPU slot, detached, then collect like slot_collect.sh.
#   bash tools/gpu/slot_start.sh GEN_MINUTES PARSER_STEPS WAIT_SECONDS [INIT_GENERATOR]
# INIT_GENERATOR (optional): an exported generator to continue from, e.g. weights/fewshot_generator_128.safetensors.
# PARSER_STEPS 0 skips the parser run (the generator then has the GPU to itself).
# SLOT_SET (optional, environment): more trainer overrides, space-separated KEY=JSON without spaces, e.g.
#   SLOT_SET='dataset_weights={"utkface":2.5} w_struct=2.0' bash tools/gpu/slot_start.sh 22 0 490 weights/...
# Needs, carried into the repo root: .slot/facenet_int8.npz and .slot/pack.npz
# (python -m fewshot_core.train.carry --out .slot; python -m fewshot_core.train.pack --out .slot/pack.npz)
# and .whl/ with the kornia wheels for the slot's Python. Training runs in its own session (setsid),
# so later calls on the same warm machine can collect it with slot_collect.sh.
set -euo pipefail
GEN_MINUTES=${1:-22}; PARSER_STEPS=${2:-12000}; WAIT=${3:-500}; INIT=${4:-}
S=/tmp/slot; mkdir -p $S
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $S/site .whl/*.whl
cp -r fewshot_core weights $S/   # a frozen copy: the working tree may be replaced by a later call
export PYTHONPATH=$S/site:$S FEWSHOT_MODEL_DIR=$S/models FEWSHOT_CACHE_DIR=$S/cache PYTHONUNBUFFERED=1
INIT_ARGS=()
read -r -a EXTRA_SET <<< "${SLOT_SET:-}"
[ -n "$INIT" ] && INIT_ARGS=(--init-generator "$S/$INIT")
cd $S
python3 -m fewshot_core.train.carry --restore "$OLDPWD/.slot/facenet_int8.npz" --models $S/models
python3 -m fewshot_core.train.pack --unpack "$OLDPWD/.slot/pack.npz" --into $S/prepared
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv
setsid nohup python3 -m fewshot_core.train --config gpu_20min --data $S/prepared --run-dir $S/run \
  --set 'datasets=["packed"]' "${EXTRA_SET[@]}" --max-minutes "$GEN_MINUTES" --export $S/run/generator_final.safetensors "${INIT_ARGS[@]}" > $S/gen.log 2>&1 < /dev/null &
(( PARSER_STEPS > 0 )) && setsid nohup python3 -m fewshot_core.parsing.train --labels $S/prepared/labels --shards $S/prepared \
  --out $S/parser_gpu.safetensors --init weights/parser_128.safetensors --steps "$PARSER_STEPS" --batch 64 \
  --lr 1e-3 --warmup 200 --device cuda --threads 6 --val-faces 0 --run-dir $S/parser_run \
  --max-minutes "$GEN_MINUTES" --log-every 500 --ckpt-every 2000 > $S/parser.log 2>&1 < /dev/null &
cd "$OLDPWD"
exec bash tools/gpu/slot_collect.sh "$WAIT"

#!/usr/bin/env bash
# Wait up to WAIT seconds (less if both trainings end), then copy the run's latest results to $OUT.
#   bash tools/gpu/slot_collect.sh WAIT_SECONDS
S=/tmp/slot; WAIT=${1:-500}; end=$((SECONDS + WAIT))
while (( SECONDS < end )); do
  pgrep -f "fewshot_core.(train|parsing.train)" > /dev/null || break
  sleep 10
done
tail -n 3 $S/gen.log; tail -n 2 $S/parser.log; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
for f in run/generator_final.safetensors run/generator_latest.safetensors parser_gpu.safetensors run/losses.csv gen.log parser.log; do
  [ -f $S/$f ] && cp $S/$f "$OUT/$(basename $f)"
done
last=$(ls $S/run/samples/*.png 2>/dev/null | tail -n 1); [ -n "$last" ] && cp "$last" "$OUT/"
[ -f "$OUT/generator_final.safetensors" ] && rm -f "$OUT/generator_latest.safetensors"
ls -la "$OUT"

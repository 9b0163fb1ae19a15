#!/usr/bin/env bash
# The first GPU run's checks, in one script (< 8 minutes on one GPU machine):
#   1. the CUDA path of a train step and a generate step: the tiny model, DeepSpeed ZeRO-2 in bf16,
#      under torchrun (one process per GPU), through `coe-ctl run` exactly as a user runs it;
#   2. LoRA training throughput of a 7B-shaped model (random weights, Mistral-7B config, bf16) as
#      model FLOPs utilisation (bench/bench_mfu.py).
# Needs: an NVIDIA GPU, a CUDA build of torch, and this project installed with its runtime extra
# (pip install -e '.[runtime]', DeepSpeed included). Writes JSON results to ${OUT:-bench/results/gpu-check}/.
#   bash bench/gpu_check.sh            (on the GPU machine, from the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-bench/results/gpu-check}"
PY="${PYTHON:-python}"
mkdir -p "$OUT_DIR"
WORK="$(mktemp -d)"
export COE_CACHE_DIR="$WORK/cache"

echo "== 1/3 device"
"$PY" - <<'PY' | tee "$OUT_DIR/device.json"
import json, torch
ok = torch.cuda.is_available()
print(json.dumps({
    "cuda": ok, "torch": torch.__version__, "cuda_version": torch.version.cuda,
    "gpus": torch.cuda.device_count() if ok else 0,
    "name": torch.cuda.get_device_name(0) if ok else None,
    "bf16": bool(ok and torch.cuda.is_bf16_supported()),
}))
raise SystemExit(0 if ok else 3)
PY
GPUS="$("$PY" -c 'import torch; print(torch.cuda.device_count())')"

echo "== 2/3 train + generate on CUDA: DeepSpeed ZeRO-2, bf16, torchrun x$GPUS"
cat > "$WORK/gpu-check.yaml" <<YAML
apiVersion: coe.ml/v1alpha1
kind: CoEExperiment
metadata: {name: gpu-check}
spec:
  dataset: {format: demo, labelSet: {name: demo}, historyWindow: 1, maxLength: 512}
  clues: {source: none}
  baseModel: {nameOrPath: tiny, dtype: bfloat16}
  lora:
    targetModules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]
    modulesToSave: [embed_tokens, lm_head]
  optimizer: {learningRate: 0.005, perDeviceBatchSize: 4, gradientAccumulationSteps: 1}
  training: {erc: {epochs: 2}}
  stages: [erc]
  evaluation: {devEachEpoch: true}
  resources: {gpusPerPod: $GPUS, deepspeed: zero2}
  store: file://$WORK/store
YAML
start=$(date +%s)
coe-ctl run "$WORK/gpu-check.yaml" --output json > "$OUT_DIR/coe-run.json"
end=$(date +%s)
"$PY" - "$WORK/store/gpu-check" "$OUT_DIR" "$((end - start))" <<'PY'
import json, pathlib, sys
root, out, seconds = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), int(sys.argv[3])
def one(step):
    found = [m.parent for m in (root / step).glob("*/MANIFEST.json")]
    assert len(found) == 1, (step, found)
    return found[0]
erc, test = one("erc"), one("test")
record = json.loads((erc / "run-record.json").read_text())
resolved = json.loads((erc / "resolved-config.json").read_text())
ds = resolved.get("deepspeed") or {}
metrics = json.loads((test / "metrics.json").read_text())
checks = {
    "train_device": record["device"], "gpu": record.get("gpu"), "world_size": resolved["world_size"],
    "zero_stage": (ds.get("zero_optimization") or {}).get("stage"),
    "bf16": (ds.get("bf16") or {}).get("enabled"),
    "test_device": json.loads((test / "run-record.json").read_text())["device"],
    "test_weighted_f1": metrics.get("weighted_f1"), "seconds": seconds,
}
(out / "cuda-path.json").write_text(json.dumps(checks, indent=2))
print(json.dumps(checks))
assert checks["train_device"] == "cuda" and checks["test_device"] == "cuda", checks
assert checks["zero_stage"] == 2, checks
PY

echo "== 3/3 LoRA MFU, Mistral-7B shape, bf16"
"$PY" bench/bench_mfu.py --config mistral-7b --seq 1400 --batch 4 --steps 10 | tee "$OUT_DIR/mfu.json"
echo "results in $OUT_DIR/ (record them in BENCHMARKS.md with the date and the GPU)"

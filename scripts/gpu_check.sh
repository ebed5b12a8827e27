#!/usr/bin/env bash
# One short check of the CUDA path (not part of the tests; its --dry-run is):
#   S1 training of the small and the notebook's run_25 network in fp32, --amp fp16 and
#   --amp bf16 (examples/s of the training loop after warm-up, synchronized), a checkpoint
#   and --resume, a 1-process torchrun (backend logged), S1 inference, S2 data and S2
#   training, and predict_structure (sequences/s) beside RNAfold when ViennaRNA is there.
#
#   bash scripts/gpu_check.sh             # on a GPU machine (about 4 minutes on one H200)
#   bash scripts/gpu_check.sh --dry-run   # the same steps, tiny, on CPU (the test suite runs it)
#
# Self-contained: needs python3 with torch, numpy, numba, pandas, matplotlib, tqdm and
# scikit-learn only (no ViennaRNA, pyfaidx or venv). The data are the committed Rfam sample
# (tests/data/rfam_sample.sto), rows repeated to the sizes below. Wheels in .whl/ (the
# device README's recipe, e.g. viennarna for the RNAfold comparison) are installed first.
# Small logs and CSVs are copied to $OUT (default /tmp/stembb_gpu_check/out); checkpoints
# stay in the work folder.
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
PY=${PY:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
WORK=${WORK:-$(mktemp -d /tmp/stembb_gpu_check.XXXX)}
OUT=${OUT:-$WORK/out}
mkdir -p "$WORK" "$OUT"
if (( DRY )); then
  DEV="--device cpu"; N_TRAIN=40; N_S2=40; EPOCHS=2; NETS="tiny"; AMPS="bf16"; CPU=0  # bf16: the flag, in fp32
else
  DEV=""; N_TRAIN=4000; N_S2=600; EPOCHS=2; NETS="small run_25"; AMPS="fp32 fp16 bf16"; CPU=8
fi
declare -A NET  # flags of stembb.s1.model.NAMED_NETWORKS
for net in $NETS; do NET[$net]=$($PY -m stembb.s1.model "$net"); done
COMMON="--mask 0 --local_unmask_offset 2 --batch_size 10 --max_length 200 --cpu $CPU --no_progress --lr 0.001 $DEV"

$PY - <<'EOF'
import torch
print("torch", torch.__version__, "| cuda", torch.version.cuda, "|",
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU: CPU run")
EOF
echo "== data: the committed Rfam sample, training rows repeated to $N_TRAIN"
$PY s1_data_gen/make_structure_dataset.py --inputs tests/data/rfam_sample.sto --out "$WORK/real.pkl.gz" \
  --len_min 20 --val_families 0.2 --test_families 0.2 2>&1 | tail -1
$PY - "$WORK" "$N_TRAIN" <<'EOF'
import sys
import pandas as pd
from stembb.io import read_pickle, write_pickle
work, n = sys.argv[1], int(sys.argv[2])
df = read_pickle(f"{work}/real.pkl.gz")
train = df[df["split"] == "train"]
big = pd.concat([df[df["split"] != "train"], train.sample(n, replace=True, random_state=0)], ignore_index=True)
write_pickle(big, f"{work}/train.pkl.gz")
lines = [f">{name}\n{seq}\n" for name, seq in zip(df["name"], df["seq"])]
open(f"{work}/test.fa", "w").write("".join(lines * max(1, n // (10 * len(lines)))))
EOF

echo "== S1 training: examples/s after warm-up"
for net in $NETS; do
  for amp in $AMPS; do
    flag=$([[ $amp == fp32 ]] && echo "" || echo "--amp $amp")
    $PY s1_training/train_conv_pixel_stem_bb.py --data "$WORK/train.pkl.gz" --result "$WORK/s1_${net}_$amp" \
      ${NET[$net]} $COMMON --epoch 1 $flag 2> "$OUT/s1_${net}_$amp.log"
    echo "$net $amp: $(grep -o '[0-9.]* examples/s per process' "$OUT/s1_${net}_$amp.log" | head -1) | $(grep -o 'device: [^;]*' "$OUT/s1_${net}_$amp.log")"
  done
done
S1_RUN="$WORK/s1_${NETS##* }_${AMPS%% *}"
echo "== --resume to a second epoch"
$PY s1_training/train_conv_pixel_stem_bb.py --data "$WORK/train.pkl.gz" --result "$S1_RUN" ${NET[${NETS##* }]} \
  $COMMON --epoch $EPOCHS --resume "$S1_RUN" 2>&1 | grep -E "resuming|saved"
echo "== torchrun, 1 process"
$PY -m torch.distributed.run --standalone --nproc_per_node 1 s1_training/train_conv_pixel_stem_bb.py \
  --data "$WORK/train.pkl.gz" --result "$WORK/ddp" ${NET[${NETS%% *}]} $COMMON --epoch 1 2> "$OUT/ddp.log"
grep -E "backend|examples/s" "$OUT/ddp.log" | cut -c21- | head -2
S1=$(ls "$S1_RUN"/model_ckpt_ep_*.pth | sort -V | tail -1)

echo "== S1 inference"
$PY evaluation/run_s1_inference.py --data "$WORK/real.pkl.gz" --threshold 0.1 --models "$S1" \
  --out "$OUT/s1_eval.csv" --plot_dir "$WORK" $DEV 2> "$OUT/s1_eval.log"
grep "sequences/s" "$OUT/s1_eval.log" | cut -c21-
echo "== S2 data and training"
$PY s2_data_gen/s1_pred_stem_processing.py --data "$WORK/train.pkl.gz" --threshold_p 0.05 --model "$S1" \
  --out_file "$WORK/s2.pkl.gz" --include_all --num $N_S2 $DEV 2> "$OUT/s2_data.log"
$PY s2_training/train_s2_box.py --input_data "$WORK/s2.pkl.gz" --epochs 2 --batch_size 16 --struct_weight 1 --terms_from_energies 0 \
  --log "$WORK/s2/box.log" --no_progress $DEV 2> "$OUT/s2_train.log"  # no ViennaRNA on that machine
grep -E "device|epoch" "$OUT/s2_train.log" | cut -c21-
S2="$WORK/s2/box.model_ckpt_ep_1.pth"
echo "== predict_structure"
$PY evaluation/predict_structure.py --s1_model "$S1" --s2_model "$S2" --fasta "$WORK/test.fa" --out "$WORK/pred.db" \
  $DEV 2> "$OUT/predict.log"
grep "predicted" "$OUT/predict.log" | cut -c21-
echo "== the shipped grammar model (S1 not run: partition functions on CPU threads), and a long RNA with --max_span"
$PY evaluation/predict_structure.py --fasta "$WORK/test.fa" --out "$WORK/pred_grammar.db" $DEV \
  2> "$OUT/predict_grammar.log"
grep "predicted" "$OUT/predict_grammar.log" | cut -c21-
LONG=$( (( DRY )) && echo 1000 || echo 5000 )
$PY -c "import random; random.seed(0); print('>long'); print(''.join(random.choice('ACGU') for _ in range($LONG)))" \
  > "$WORK/long.fa"
$PY evaluation/predict_structure.py --fasta "$WORK/long.fa" --max_span 300 --out "$WORK/long.db" $DEV \
  2> "$OUT/predict_long.log"
echo "$LONG nt, --max_span 300: $(grep -o 'predicted .*' "$OUT/predict_long.log")"
if $PY -c "import RNA" 2> /dev/null; then
  $PY - "$WORK/test.fa" <<'EOF'
import sys, time
import RNA
seqs = [line.strip() for line in open(sys.argv[1]) if line.strip() and not line.startswith(">")]
t = time.perf_counter()
for s in seqs:
    RNA.fold_compound(s).mfe()
print(f"RNAfold (ViennaRNA {RNA.__version__}, one CPU core): {len(seqs) / (time.perf_counter() - t):.1f} sequences/s")
EOF
else
  echo "RNAfold: ViennaRNA not importable here (carry its wheel in .whl/ for the comparison)"
fi
echo "gpu check done: outputs in $OUT"

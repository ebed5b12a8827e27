#!/usr/bin/env bash
# One short check of the CUDA path, for a machine with a GPU (not part of the tests):
# run_25's network for a few hundred steps with and without --amp, a checkpoint,
# --resume, a 1-process torchrun with NCCL, and inference on the GPU. Prints examples/s.
# Usage: bash scripts/gpu_check.sh [python]   (about 5 minutes on one H100)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python}
OUT=${OUT:-/tmp/stembb_gpu_check}
rm -rf "$OUT"; mkdir -p "$OUT"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
(cd s1_data_gen && $PY generate_human_transcriptome_segment_high_mfe_freq_multi_struct.py --len 40 --num_data 300 \
  --num_sample 10 --chromosomes chr3 chr4 --max_per_gene 100 --workers 8 --out "$OUT/train.pkl.gz")
NET="--num_filters 128 128 --filter_width 9 9 --hid_shared 50 50 50 --hid_output 20 --lr 0.0005 --mask 0 \
  --local_unmask_offset 4 --batch_size 10 --max_length 200 --cpu 4 --no_progress"
for amp in "" "--amp"; do
  name=run25${amp:+_amp}
  start=$SECONDS
  $PY s1_training/train_conv_pixel_stem_bb.py --data "$OUT/train.pkl.gz" --result "$OUT/$name" $NET --epoch 1 $amp
  rows=$(grep -o "[0-9]* training rows" "$OUT/$name/run.log" | cut -d' ' -f1)
  echo "$name: $rows training examples, one epoch + validation in $((SECONDS - start)) s (start-up included)"
done
$PY s1_training/train_conv_pixel_stem_bb.py --data "$OUT/train.pkl.gz" --result "$OUT/run25" $NET --epoch 2 \
  --resume "$OUT/run25"
ls "$OUT/run25"
$PY -m torch.distributed.run --standalone --nproc_per_node 1 s1_training/train_conv_pixel_stem_bb.py --data "$OUT/train.pkl.gz" \
  --result "$OUT/ddp" $NET --epoch 1
grep -E "device|epoch 0" "$OUT/ddp/run.log"
$PY evaluation/run_s1_inference.py --data "$OUT/train.pkl.gz" --num 100 --threshold 0.1 --models "$OUT/run25" \
  --out "$OUT/eval.csv" --plot_dir "$OUT"
cat "$OUT/eval.csv"

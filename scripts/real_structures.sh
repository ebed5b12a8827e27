#!/usr/bin/env bash
# README "Real structures": Rfam seed alignments -> family-held-out split -> three models
# (ViennaRNA data only = the quality run's checkpoints; those fine-tuned on the real training
# families; trained on real structures only) -> one evaluation on the held-out families
# beside ViennaRNA -> the model named by SHIP exported to models/ (the shipped default).
#
#   RFAM=Rfam.seed.gz bash scripts/real_structures.sh     # about 60 minutes on 2 CPU cores
#
# Needs the quality run's checkpoints (bash scripts/quality_run.sh; BASE=demo takes the main
# job's) for the ViennaRNA-only and fine-tuned rows.
set -euo pipefail
SECONDS=0
cd "$(dirname "$0")/.."
PY=${PY:-python}
RFAM=${RFAM:?set RFAM to Rfam.seed.gz (Rfam seed alignments, Stockholm)}
D=${D:-data/real}
SHIP=${SHIP:-vienna}  # which of vienna / ft / real becomes models/ (the best of the report's run)
BASE=${BASE:-quality}
S1V=${S1V:-$(ls s1_training/result/$BASE/model_ckpt_ep_*.pth | sort -V | tail -1)}
S2V=${S2V:-$(ls s2_training/result/s2_box_$BASE.model_ckpt_ep_*.pth | sort -V | tail -1)}
DATA=$D/rfam_len20_200_f2.pkl.gz
ARCH="$($PY -m stembb.s1.model small) --mask 0 --local_unmask_offset 2 --batch_size 10 --max_length 200 \
  --cpu 1 --no_progress"  # the main job's network, so --init fits
mkdir -p "$D"

echo "== data: Rfam seed, 20-200 nt, at most 2 sequences per family, split by clan/family"
$PY s1_data_gen/make_structure_dataset.py --inputs "$RFAM" --out "$DATA" --len_min 20 --len_max 200 \
  --max_per_family 2 --val_families 0.1 --test_families 0.1 --seed 0

train_s2 () {  # $1 name, $2 S1 checkpoint, then extra S2 flags
  local name=$1 s1=$2; shift 2
  $PY s2_data_gen/s1_pred_stem_processing.py --data "$DATA" --threshold_p 0.1 --model "$s1" \
    --out_file "$D/s2_$name.pkl.gz" --include_all --no_progress
  $PY s2_training/s2_train_gnn.py --input_data "$D/s2_$name.pkl.gz" --struct_weight 1 --batch_size 16 \
    --log "$D/s2_$name.log" --no_progress "$@"
}
echo "== fine-tuned: the main job's S1 and S2, --init, on the real training families"
$PY s1_training/train_conv_pixel_stem_bb.py --data "$DATA" --result "$D/s1_ft" $ARCH --lr 0.001 --epoch 2 --init "$S1V"
train_s2 ft "$D/s1_ft/model_ckpt_ep_1.pth" --learning_rate 0.001 --epochs 3 --init "$S2V"
echo "== real structures only"
$PY s1_training/train_conv_pixel_stem_bb.py --data "$DATA" --result "$D/s1_real" $ARCH --lr 0.003 --epoch 2
train_s2 real "$D/s1_real/model_ckpt_ep_1.pth" --learning_rate 0.002 --epochs 3 --terms_from_energies 0

echo "== evaluation on the held-out test families"
for m in "vienna $S1V $S2V" "ft $D/s1_ft/model_ckpt_ep_1.pth $D/s2_ft.model_ckpt_ep_2.pth" \
         "real $D/s1_real/model_ckpt_ep_1.pth $D/s2_real.model_ckpt_ep_2.pth"; do
  set -- $m
  $PY evaluation/run_end_to_end.py --s1_model "$2" --s2_model "$3" --data "$DATA" --split test \
    --out "$D/e2e_$1.csv" 2>&1 | grep "F1"
done

echo "== export the $SHIP model to models/ (no optimizer state)"
declare -A S1_OF=([vienna]=$S1V [ft]=$D/s1_ft/model_ckpt_ep_1.pth [real]=$D/s1_real/model_ckpt_ep_1.pth)
declare -A S2_OF=([vienna]=$S2V [ft]=$D/s2_ft.model_ckpt_ep_2.pth [real]=$D/s2_real.model_ckpt_ep_2.pth)
$PY scripts/export_models.py "${S1_OF[$SHIP]}" "${S2_OF[$SHIP]}"
echo "real-structure report took $((SECONDS / 60)) min"

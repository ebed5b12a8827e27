#!/usr/bin/env bash
# README "How well" and docs/RESULTS.md "Real structures": Rfam seed alignments -> a
# family-held-out split and an in-family split -> the grammar model trained on real structures
# (with and without S1's evidence) -> every predictor on the same validation, test and
# in-family sequences, beside RNAfold MFE and MEA -> with SHIP=1, the grammar model exported
# as models/stembb_s2.pth (the shipped S2).
#
#   RFAM=Rfam.seed.gz bash scripts/real_structures.sh     # about 45 minutes on 2 CPU cores
#
# The loop terms start from the energy fit stored in models/stembb_s2.pth (INIT to change;
# a box S2 checkpoint of scripts/quality_run.sh works too). Knobs are chosen on the
# validation families; the test families are only scored.
set -euo pipefail
SECONDS=0
cd "$(dirname "$0")/.."
PY=${PY:-python}
RFAM=${RFAM:?set RFAM to Rfam.seed.gz (Rfam seed alignments, Stockholm)}
D=${D:-data/real}
SHIP=${SHIP:-0}
case $SHIP in 0|1) ;; *) echo "error: SHIP must be 0 or 1, got '$SHIP'" >&2; exit 2 ;; esac
INIT=${INIT:-models/stembb_s2.pth}
S1V=models/stembb_s1.pth
BOX=models/stembb_s2_box.pth
DATA=$D/rfam_len20_200_f2.pkl.gz
S1FT=$D/s1_ft/model_ckpt_ep_1.pth
mkdir -p "$D"

echo "== data: Rfam seed, 20-200 nt, at most 2 sequences per family, split by clan/family; in-family split"
for n in 2 6; do
  $PY s1_data_gen/make_structure_dataset.py --inputs "$RFAM" --out "$D/rfam_len20_200_f$n.pkl.gz" --len_min 20 \
    --len_max 200 --max_per_family $n --val_families 0.1 --test_families 0.1 --seed 0
done
$PY s1_data_gen/in_family_split.py --data "$DATA" --more "$D/rfam_len20_200_f6.pkl.gz" --out "$D/rfam_in_family.pkl.gz"

echo "== S1 fine-tuned on the real training families (for the S1-evidence row)"
rm -rf "$D/s1_ft"  # a new run refuses a folder holding another run's checkpoints
$PY s1_training/train_conv_pixel_stem_bb.py --data "$DATA" --result "$D/s1_ft" $($PY -m stembb.s1.model small) \
  --mask 0 --local_unmask_offset 2 --batch_size 10 --max_length 200 --cpu 1 --no_progress --lr 0.0005 --epoch 2 \
  --init "$S1V"

echo "== grammar models"
CRF="$PY s2_training/train_s2_grammar.py --data $DATA --init_terms $INIT --no_progress"
$CRF --out "$D/grammar_energy.pth" --epochs 0                          # the energy fit alone, decoder chosen
$CRF --out "$D/grammar_crf.pth" --epochs 3 --lr 0.001 --pull 0.1       # trained on real structures: shipped
$CRF --out "$D/grammar_s1ev.pth" --epochs 1 --lr 0.01 --freeze_terms --s1_model "$S1V" --keep_last
$CRF --out "$D/grammar_crf_s1ft.pth" --epochs 1 --lr 0.001 --evidence_lr 0.01 --pull 0.1 --s1_model "$S1FT" --keep_last

echo "== every predictor on the validation, test and in-family sequences"
MODELS=(--model "stembb (grammar, real structures)" - "$D/grammar_crf.pth"
        --model "grammar, energy fit, MEA or threshold" - "$D/grammar_energy.pth"
        --model "grammar, energy fit, max score" - "$D/grammar_energy.pth" max
        --model "+ S1 evidence (ViennaRNA S1)" "$S1V" "$D/grammar_s1ev.pth"
        --model "+ S1 evidence (fine-tuned S1), real structures" "$S1FT" "$D/grammar_crf_s1ft.pth"
        --model "S1 as a hard filter + box S2 (previous)" "$S1V" "$BOX")
for set in "val $DATA" "test $DATA" "test $D/rfam_in_family.pkl.gz"; do
  read -r split data <<< "$set"
  name=$(basename "$data" .pkl.gz)_$split
  $PY evaluation/compare_predictors.py --data "$data" --split "$split" "${MODELS[@]}" --out "$D/compare_$name.csv" \
    --no_progress
done

echo "== long RNAs: records of 201-1000 nt of families outside the training and validation splits, whole and spanned"
$PY s1_data_gen/make_structure_dataset.py --inputs "$RFAM" --out "$D/rfam_long_held_out.pkl.gz" --len_min 201 \
  --len_max 1000 --max_per_family 2 --held_out_from "$DATA" --seed 0
for span in whole 200; do
  $PY evaluation/compare_predictors.py --data "$D/rfam_long_held_out.pkl.gz" --split test --max_length 1000 \
    --model "stembb (shipped)" - "$D/grammar_crf.pth" --model "grammar, energy fit" - "$D/grammar_energy.pth" \
    $([ $span = whole ] || echo --max_span $span) --out "$D/compare_long_$span.csv" --no_progress
done

CHR5=data/human_transcriptome_segment_high_mfe_freq_test_len20_200_150.pkl.gz  # made by scripts/demo.sh
if [ -f "$CHR5" ]; then  # agreement with ViennaRNA's MFE on the held-out chromosome
  $PY evaluation/compare_predictors.py --data "$CHR5" "${MODELS[@]}" --out "$D/compare_chr5.csv" --no_progress
fi

if [ "$SHIP" = 1 ]; then
  echo "== export the grammar model as models/stembb_s2.pth (no optimizer state)"
  $PY scripts/export_models.py "$S1V" "$D/grammar_crf.pth"
fi
echo "real-structure report took $((SECONDS / 60)) min"

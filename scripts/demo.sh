#!/usr/bin/env bash
# The main job, small, on the embedded genome (chr3 + chr4 train, chr5 held out), on CPU:
# data -> S1 training -> S1 evaluation -> S2 data -> S2 training -> end-to-end evaluation
# against ViennaRNA on the held-out chromosome. Each stage is a command of the lab notebook (docs/DATA.md, docs/TRAINING.md).
# The sizes below are the main job's; scripts/quality_run.sh runs the same stages larger
# under another TAG (outputs named after it, the test set shared). EXPORT_MODELS=1 ends by
# exporting the run's models to models/ (scripts/export_models.py).
set -euo pipefail
SECONDS=0
cd "$(dirname "$0")/.."
PY=${PY:-python}
TRAIN="--chromosomes chr3 chr4"
TEST="--chromosomes chr5"
TAG=${TAG:-demo}
RUN=s1_training/result/$TAG
S1_SEQS=${S1_SEQS:-5000}
S1_EPOCHS=${S1_EPOCHS:-5}
S2_SEQS=${S2_SEQS:-4000}  # the loop terms gain most from more sequences (docs/TRAINING.md, S2 training)
S2_EPOCHS=${S2_EPOCHS:-1}
S1_MAX_PER_GENE=${S1_MAX_PER_GENE:-300}
S2_MAX_PER_GENE=${S2_MAX_PER_GENE:-1000}
S1_DATA=data/s1_train_merged_len40_$S1_SEQS.pkl.gz
S2_CANDIDATES=data/s2_train_pred_stem_$TAG.pkl.gz
TEST_DATA=data/human_transcriptome_segment_high_mfe_freq_test_len20_200_150.pkl.gz
SMALL=$($PY -m stembb.s1.model small)  # the "small" network of stembb.s1.model.NAMED_NETWORKS

echo "== S1 data: multi-struct training set, merged stem boxes (chr3, chr4)"
(cd s1_data_gen && $PY generate_human_transcriptome_segment_high_mfe_freq_multi_struct.py \
  --len 40 --num_data $S1_SEQS --num_sample 10 $TRAIN --max_per_gene $S1_MAX_PER_GENE --workers 2 --merge \
  --out ../$S1_DATA)
echo "== S2 training data: variable length, MFE (chr3, chr4)"
(cd s2_data_gen && $PY generate_human_transcriptome_segment_high_mfe_freq_var_len.py \
  --len_min 20 --len_max 200 --num_seq $S2_SEQS --threshold_mfe_freq 0.02 $TRAIN --max_per_gene $S2_MAX_PER_GENE --workers 2 \
  --out ../data/s2_train_mfe_len20_200_$S2_SEQS.pkl.gz)
echo "== test set: variable length, MFE only, held-out chr5"
(cd s2_data_gen && $PY generate_human_transcriptome_segment_high_mfe_freq_var_len.py \
  --len_min 20 --len_max 200 --num_seq 150 --threshold_mfe_freq 0.02 $TEST --max_per_gene 200 --workers 2 \
  --out ../$TEST_DATA)
echo "== dataset statistics"
$PY evaluation/plot_dataset_statistics.py --data $S1_DATA $TEST_DATA --out plot/stem_size_distribution.png

echo "== S1 training (small network, CPU)"
rm -rf "$RUN"
(cd s1_training && $PY train_conv_pixel_stem_bb.py --data ../$S1_DATA \
  --result result/$TAG $SMALL --lr 0.003 \
  --epoch $S1_EPOCHS --mask 0 --local_unmask_offset 2 --batch_size 10 --max_length 200 --cpu 1 --no_progress)
S1=$(ls "$RUN"/model_ckpt_ep_*.pth | sort -V | tail -1)

echo "== S1 evaluation on the held-out test set"
$PY evaluation/run_s1_inference.py --data $TEST_DATA \
  --threshold 0.05 0.1 0.2 0.4 --models "$RUN" --out data/s1_eval_metric_$TAG.csv

echo "== S2 data: S1 proposals -> candidate boxes and pairs"
(cd s2_data_gen && $PY s1_pred_stem_processing.py --data ../data/s2_train_mfe_len20_200_$S2_SEQS.pkl.gz --threshold_p 0.1 \
  --model "../$S1" --out_file ../$S2_CANDIDATES --include_all)

echo "== S2 training: loop terms fitted to ViennaRNA energies of samples, then the box transformer; decoding gamma calibrated"
rm -f s2_training/result/s2_box_$TAG.*
(cd s2_training && $PY train_s2_box.py --input_data ../$S2_CANDIDATES --training_proportion 0.9 \
  --learning_rate 0.002 --epochs $S2_EPOCHS --batch_size 16 --workers 2 \
  --log result/s2_box_$TAG.log --no_progress)
S2=$(ls s2_training/result/s2_box_$TAG.model_ckpt_ep_*.pth | sort -V | tail -1)

echo "== end-to-end evaluation against ViennaRNA on the held-out test set"
$PY evaluation/run_end_to_end.py --s1_model "$S1" --s2_model "$S2" \
  --data $TEST_DATA --out data/end_to_end_$TAG.csv 2>&1 | tee data/end_to_end_$TAG.log

echo
echo "done. CSVs: data/s1_eval_metric_$TAG.csv data/end_to_end_$TAG.csv data/end_to_end_${TAG}_summary.csv"
echo "plots: plot/stem_size_distribution.png plot/s1_test_set_sensitivity.png plot/s1_sensitivity_tradeoff.png"
echo "       $RUN/metrics.png s2_training/result/s2_box_$TAG.metrics.png"
echo "       data/end_to_end_$TAG.png"
grep -h "end-to-end F1" data/end_to_end_$TAG.log | cut -d' ' -f3-
if [[ ${EXPORT_MODELS:-0} == 1 ]]; then
  echo "== export this run's S1 and S2 as the shipped model (models/)"
  $PY scripts/export_models.py "$S1" "$S2"
fi
echo "$TAG run took $((SECONDS / 60)) min $((SECONDS % 60)) s"

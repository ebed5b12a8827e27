#!/usr/bin/env bash
# The main job, small, on the embedded genome (chr3+chr4 train, chr5 held out), on CPU.
# Each stage is the command README's notebook shows; outputs go to data/ and plot/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
TRAIN="--chromosomes chr3 chr4"
TEST="--chromosomes chr5"

echo "== S1 data: multi-struct training set (chr3, chr4)"
(cd s1_data_gen && $PY generate_human_transcriptome_segment_high_mfe_freq_multi_struct.py \
  --len 40 --num_data 2000 --num_sample 10 $TRAIN --max_per_gene 100 --workers 2 --out ../data/s1_train_multi_structs_len40_2000.pkl.gz)
(cd s1_data_gen && $PY generate_human_transcriptome_segment_high_mfe_freq_multi_struct.py \
  --len 40 --num_data 2000 --num_sample 10 $TRAIN --max_per_gene 100 --workers 2 --merge --out ../data/s1_train_merged_len40_2000.pkl.gz)
echo "== S1 data: fixed-length MFE set"
(cd s1_data_gen && $PY generate_human_transcriptome_segment_high_mfe_freq.py \
  --len 40 --num_seq 500 --threshold_mfe_freq 0.02 $TRAIN --max_per_gene 100 --out ../data/s1_train_mfe_len40_500.pkl.gz)
echo "== test set: variable length, MFE only, held-out chr5"
(cd s2_data_gen && $PY generate_human_transcriptome_segment_high_mfe_freq_var_len.py \
  --len_min 20 --len_max 200 --num_seq 200 --threshold_mfe_freq 0.02 $TEST --max_per_gene 200 \
  --out ../data/human_transcriptome_segment_high_mfe_freq_test_len20_200_200.pkl.gz)
echo "== dataset statistics"
$PY evaluation/plot_dataset_statistics.py --data data/s1_train_multi_structs_len40_2000.pkl.gz \
  data/s1_train_merged_len40_2000.pkl.gz data/human_transcriptome_segment_high_mfe_freq_test_len20_200_200.pkl.gz \
  --out plot/stem_size_distribution.png
echo "done: pickles in data/, plots in plot/"

#!/usr/bin/env bash
# The CPU quality run of docs/RESULTS.md: the main job's stages (scripts/demo.sh) with
# four times the S1 segments, 6 S1 epochs, and 7,500 S2 sequences (most of what the
# embedded genome's training chromosomes hold at MFE frequency 0.02), on the same
# held-out test set. Outputs are named "quality" (s1_training/result/quality,
# data/end_to_end_quality*.csv, ...). Environment variables of demo.sh override sizes.
# It ends by exporting its S1 and box S2 to models/stembb_s1.pth and stembb_s2_box.pth
# (models/MODEL_CARD.md; EXPORT_MODELS=0 keeps models/ as it is); its loop terms' energy
# fit is where the shipped grammar model starts (scripts/real_structures.sh INIT=...).
set -euo pipefail
export EXPORT_MODELS=${EXPORT_MODELS:-1}
export TAG=quality S1_SEQS=${S1_SEQS:-20000} S1_EPOCHS=${S1_EPOCHS:-6} S2_SEQS=${S2_SEQS:-7500} S2_EPOCHS=${S2_EPOCHS:-1}
export S1_MAX_PER_GENE=${S1_MAX_PER_GENE:-2000} S2_MAX_PER_GENE=${S2_MAX_PER_GENE:-3000}
exec bash "$(dirname "$0")/demo.sh"

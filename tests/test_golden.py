"""Golden answers of the shipped model (models/stembb_s2.pth): a change that moves its
structures, its energies or its F1 on a small real sample fails here. When a new model
is exported on purpose (scripts/export_models.py), these values are re-measured with
it and changed in the same commit, which says why."""
import numpy as np
import pytest

import stembb
from conftest import REPO
from stembb.data.formats import read_structures
from stembb.metrics import pair_scores

RANDOM = np.random.default_rng(2021)
GOLDEN = [  # (sequence, dot-bracket, energy in kcal/mol)
    ("GGGGAAACCCC", "((((...))))", -3.8228),
    ("GGGGAAACCCCAUAUGGGCGAAAGCCCUU", "((((...))))....((((....))))..", -12.7253),
    ("GCGGAUUUAGCUCAGUUGGGAGAGCGCCAGACUGAAGAUCUGGAGGUCCUGUGUUCGAUCCACAGAAUUCGCACCA",  # yeast tRNA-Phe
     "(((((((.....(((................)))...............................)))))))....", -1.991),
    ("".join(RANDOM.choice(list("ACGU"), 40)), ".....(((((.......)))))........(((...))).", -5.9549),
    ("".join(RANDOM.choice(list("ACGU"), 80)),
     "............(((((((...........)).))))).....((.((((...............)))).).).......", -6.5854),
    ("".join(RANDOM.choice(list("ACGU"), 150)),
     ".......((((((.............................((((......(((.((((((((((((..(.((.....)).)...))))))))).))).)))...."
     "))))...........))))))......................", -25.455),
]


@pytest.mark.parametrize("seq, structure, energy", GOLDEN, ids=[f"{len(s)}nt" for s, _, _ in GOLDEN])
def test_the_shipped_model_folds_as_it_did(seq, structure, energy):
    folded, folded_energy = stembb.fold(seq)
    assert folded == structure
    assert folded_energy == pytest.approx(energy, abs=1e-3)


def test_the_shipped_models_f1_on_a_real_sample():
    """One record of each of the 16 families of tests/data/rfam_sample.sto (consensus
    structures projected onto members)."""
    records, _ = read_structures(REPO / "tests" / "data" / "rfam_sample.sto")
    first = {}
    for r in records:
        first.setdefault(r.family, r)
    first = list(first.values())
    assert len(first) == 16
    predicted = stembb.load_predictor().predict([r.seq for r in first])
    f1 = np.mean([pair_scores(y, r.pairs)["f1"] for y, r in zip(predicted, first)])
    assert f1 == pytest.approx(0.5925219742655303, abs=1e-9)

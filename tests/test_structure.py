import numpy as np
import pandas as pd
import pytest

from stembb.data.dot_brackets import structure_columns_of
from stembb.errors import InputError
from stembb.data.folding import fold
from stembb.io import read_pickle
from stembb.structure import (BULGE, HAIRPIN, INTERNAL_LOOP, PSEUDOKNOT, STEM, Box, StructureError,
                              canonical_pair_matrix, db_from_pairs, is_canonical, local_structure_boxes,
                              one_idx_from_pairs, pairs_from_db, pairs_from_one_idx, stem_boxes,
                              stems, validate_pairs)
from stembb.boxes import stem_pairs


def boxes_of(db):
    return sorted(local_structure_boxes(pairs_from_db(db)))


def test_hairpin_stem():
    assert boxes_of("((((...))))") == sorted([Box((0, 7), (4, 4), STEM), Box((3, 3), (5, 5), HAIRPIN)])


def test_bulge():
    assert boxes_of("((.((...))))") == sorted([
        Box((0, 10), (2, 2), STEM), Box((3, 8), (2, 2), STEM),
        Box((1, 9), (3, 2), BULGE), Box((4, 4), (5, 5), HAIRPIN)])


def test_internal_loop():
    assert boxes_of("((..((...))..))") == sorted([
        Box((0, 13), (2, 2), STEM), Box((4, 9), (2, 2), STEM),
        Box((1, 10), (4, 4), INTERNAL_LOOP), Box((5, 5), (5, 5), HAIRPIN)])


def test_multiloop_has_no_box_but_hairpins_do():
    assert boxes_of("((...)(...))") == sorted([
        Box((0, 11), (1, 1), STEM), Box((1, 5), (1, 1), STEM), Box((6, 10), (1, 1), STEM),
        Box((1, 1), (5, 5), HAIRPIN), Box((6, 6), (5, 5), HAIRPIN)])


def test_pseudoknot():
    pairs = pairs_from_db("((..[[..))..]]")
    assert pairs == [(0, 9), (1, 8), (4, 13), (5, 12)]
    assert sorted(local_structure_boxes(pairs)) == sorted([
        Box((0, 8), (2, 2), STEM), Box((4, 12), (2, 2), STEM), Box((0, 0), (14, 14), PSEUDOKNOT)])


def test_stem_box_reference_corner_is_outermost_pair():
    (x0, y0), (w, _), _ = stem_boxes([(2, 20), (3, 19), (4, 18)])[0]
    assert (x0, y0 + w - 1) == (2, 20)


@pytest.mark.parametrize("db", ["((((...))))", "((.((...)).))..((...))", "((..[[..))..]]", "((..[[..{{..))..]]..}}",
                                "", "....", "((((....)).))"])
def test_dot_bracket_round_trip(db):
    assert db_from_pairs(pairs_from_db(db), len(db)) == db


def test_db_round_trip_crossing_order():
    db = "(<[{..)>]}"
    pairs = pairs_from_db(db)
    assert pairs_from_db(db_from_pairs(pairs, len(db))) == pairs


def test_one_idx_round_trip():
    pairs = [(0, 9), (1, 8), (4, 13)]
    assert one_idx_from_pairs(pairs) == ([0, 1, 4], [9, 8, 13])
    assert pairs_from_one_idx(([4, 0, 1], [13, 9, 8])) == pairs


@pytest.mark.parametrize("pairs, msg", [([(3, 3)], "i >= j"), ([(5, 2)], "i >= j"),
                                        ([(0, 10)], "outside"), ([(-1, 4)], "outside"),
                                        ([(0, 5), (5, 8)], "two pairs"), ([(0, 5), (1, 5)], "two pairs")])
def test_validation_errors(pairs, msg):
    with pytest.raises(StructureError, match=msg):
        validate_pairs(pairs, 10)


@pytest.mark.parametrize("db", ["(()", "())", "(]", "((x))"])
def test_bad_dot_bracket(db):
    with pytest.raises(StructureError):
        pairs_from_db(db)


def test_every_stem_box_anti_diagonal_equals_its_pairs_on_real_samples():
    seq = "GGGAAAUCCCGCGCAUUAGCGCGUUAGCAAUGCUAACGGAUCCUAGCAUGCAUGGCUAGGAUCC"
    for db in fold(seq, num_sample=30, seed=3).samples:
        pairs = pairs_from_db(db)
        on_diagonals = sorted(p for box in stem_boxes(pairs) for p in stem_pairs(box))
        assert on_diagonals == pairs
        assert [stem_pairs(b) for b in stem_boxes(pairs)] == stems(pairs)


def test_canonical():
    assert is_canonical("GT", 0, 1) and is_canonical("au", 0, 1) and not is_canonical("AC", 0, 1)
    m = canonical_pair_matrix("ACGUT")
    assert m[0, 3] and m[0, 4] and m[1, 2] and m[2, 3] and not m[0, 1] and not m[0, 2]
    assert (m == m.T).all()


def test_read_pickle_maps_legacy_pseudoknot_spelling(tmp_path):
    path = tmp_path / "old.pkl.gz"
    pd.DataFrame({"seq": ["GGGAAACCC"], "one_idx": [([0], [8])],
                  "bounding_boxes": [[((0, 8), (1, 1), "stem"), ((0, 0), (9, 9), "pesudo_knot")]]}
                 ).to_pickle(path, compression="gzip")
    df = read_pickle(path)
    assert [b.kind for b in df.loc[0, "bounding_boxes"]] == [STEM, PSEUDOKNOT]


@pytest.mark.parametrize("frame, message", [
    (pd.DataFrame({"seq": ["ACGU"], "one_idx": [([0], [3])]}), "missing column(s) bounding_boxes"),
    (pd.DataFrame({"seq": ["ACGU", "ACXU"], "one_idx": [([0], [3])] * 2, "bounding_boxes": [[]] * 2}),
     "row 1: column 'seq' has letters outside ACGTUN: X"),
    (pd.DataFrame({"seq": ["ACGU"], "one_idx": [([0], [7])], "bounding_boxes": [[]]}), "row 0: column 'one_idx'"),
    (pd.DataFrame({"seq": ["ACGU"], "one_idx": [([0], [3])], "bounding_boxes": [[((0, 3), (1, 1), "blob")]]}),
     "row 0: column 'bounding_boxes' is malformed"),
    (pd.Series([1, 2]), "not a pandas DataFrame"),
])
def test_read_pickle_errors_name_file_row_and_column(tmp_path, frame, message):
    path = tmp_path / "bad.pkl.gz"
    frame.to_pickle(path, compression="gzip")
    with pytest.raises(InputError) as err:
        read_pickle(path)
    assert str(path) in str(err.value) and message in str(err.value)
    assert "\n" not in str(err.value)


def test_read_pickle_unreadable_file(tmp_path):
    path = tmp_path / "garbage.pkl.gz"
    path.write_bytes(b"not a pickle")
    with pytest.raises(InputError, match="not a readable pandas pickle"):
        read_pickle(path)


def test_loops_closed_by_pairs_that_also_cross_get_their_boxes():
    boxes = local_structure_boxes([(0, 4), (1, 7), (3, 5)])
    assert Box((1, 5), (3, 3), INTERNAL_LOOP) in boxes and any(b.kind == PSEUDOKNOT for b in boxes)
    assert Box((0, 3), (2, 3), BULGE) in local_structure_boxes([(0, 5), (1, 3), (2, 6)])


def test_pairs_of_neighbouring_bases_are_one_pair_stems_enclosing_no_hairpin():
    assert stem_boxes([(1, 2)]) == [Box((1, 2), (1, 1), STEM)]
    assert local_structure_boxes([(0, 1)]) == [Box((0, 1), (1, 1), STEM)]
    assert Box((0, 0), (3, 3), HAIRPIN) in local_structure_boxes([(0, 2)])  # one base is a hairpin
    assert structure_columns_of(["()."]) == [(([0], [1]), [Box((0, 1), (1, 1), STEM)])]  # the compiled pass too
    assert stems([(0, 1), (2, 5)]) == [[(0, 1)], [(2, 5)]]


def test_compiled_dot_bracket_pass_equals_the_python_functions_on_real_samples():
    rng = np.random.default_rng(4)
    checked = 0
    for k, length in enumerate((5, 23, 40, 97, 180)):
        seq = "".join(rng.choice(list("ACGU"), length))
        f = fold(seq, num_sample=20, seed=k)
        dbs = [f.mfe_structure] + f.samples + ["." * length, "(" + "." * (length - 2) + ")"]
        for db, (one_idx, boxes) in zip(dbs, structure_columns_of(dbs), strict=True):
            pairs = pairs_from_db(db)
            assert one_idx == one_idx_from_pairs(pairs) and boxes == local_structure_boxes(pairs), db
            assert all(type(b) is Box and type(b.corner[0]) is int for b in boxes)
            checked += 1
    assert checked > 60 and structure_columns_of([]) == []
    assert structure_columns_of(["(.)(.)"]) == [(([0, 3], [2, 5]), [Box((0, 2), (1, 1), STEM), Box((3, 5), (1, 1), STEM),
                                                                  Box((0, 0), (3, 3), HAIRPIN), Box((3, 3), (3, 3), HAIRPIN)])]


@pytest.mark.parametrize("dbs, message", [(["((.."], r"structure 0 \('\(\(\.\.'\) has an unmatched bracket"),
                                          (["(..)", ")(.."], "structure 1 .* unmatched bracket"),
                                          (["(.[)]"], "structure 0 .* a character other than"),
                                          (["(..)", "(...)", "..."], r"differ in length: \[3, 4, 5\]")])
def test_compiled_dot_bracket_pass_names_the_bad_structure(dbs, message):
    with pytest.raises(StructureError, match=message):
        structure_columns_of(dbs)

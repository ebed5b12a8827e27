import numpy as np
import pandas as pd
import pytest
import torch

from conftest import error_line, run_script, train_s1
from reference_decode import proposals_from_lists, slow_decode
from stembb.checkpoint import save_checkpoint
from stembb.data.folding import fold
from stembb.boxes import stem_corners
from stembb.metrics import s1_sequence_metrics
from stembb.s1.model import SimpleConvNet
from stembb.s1.predict import MAP_NAMES, decode_proposals, iter_maps, length_batches, predict_maps
from stembb.s2.candidates import BOX_COLUMNS, box_table, pair_features, s2_row
from stembb.structure import STEM, Box, local_structure_boxes, pairs_from_db
from stembb.s1.targets import stem_targets


def random_maps(length, rng):
    def classes(n):
        return rng.integers(0, n, (length, length)).astype(np.uint8)  # argmax maps are uint8, as iter_maps gives

    return {"p_on": rng.random((length, length)).astype(np.float32),
            "loc_x": classes(12), "p_loc_x": rng.random((length, length)).astype(np.float32),
            "loc_y": classes(12), "p_loc_y": rng.random((length, length)).astype(np.float32),
            "size": classes(11), "p_size": rng.random((length, length)).astype(np.float32),
            "size_scalar": (rng.random((length, length)) * 8 - 1).astype(np.float32)}


@pytest.mark.parametrize("length, threshold", [(15, 0.3), (40, 0.9), (77, 0.97), (120, 0.99)])
def test_decoding_equals_per_pixel_reference(length, threshold):
    rng = np.random.default_rng(length)
    seq = "".join(rng.choice(list("ACGU"), length))
    maps = random_maps(length, rng)
    fast, slow = decode_proposals(maps, seq, threshold), slow_decode(maps, seq, threshold)
    assert len(slow) > 0
    for name in ("bx", "by", "w", "box", "source"):
        np.testing.assert_array_equal(getattr(fast, name), getattr(slow, name), err_msg=name)
    for name in ("prob_on", "prob_other"):
        np.testing.assert_allclose(getattr(fast, name), getattr(slow, name), rtol=1e-6, err_msg=name)


def oracle_maps(length, boxes):
    t = stem_targets(length, boxes, 0)
    ones = np.ones((length, length), np.float32)
    return {"p_on": t["stem_on"], "loc_x": t["location_x"], "p_loc_x": ones, "loc_y": t["location_y"], "p_loc_y": ones,
            "size": t["sm_size"], "p_size": ones, "size_scalar": t["sl_size"]}


def test_batched_maps_are_compact_own_their_memory_and_equal_single_sequence_ones():
    torch.manual_seed(0)
    net = SimpleConvNet([4, 4], [3, 3], [4], 4).eval()
    rng = np.random.default_rng(3)
    seqs = ["".join(rng.choice(list("ACGU"), n)) for n in (31, 12, 57, 12, 40)]
    cpu = torch.device("cpu")
    batched = dict(iter_maps(net, seqs, cpu, batch_size=3))
    assert sorted(batched) == list(range(len(seqs)))
    for k, seq in enumerate(seqs):
        alone = predict_maps(net, [seq], cpu)[0]
        for name in MAP_NAMES:
            got = batched[k][name]
            assert got.shape == (len(seq), len(seq)) and got.flags.owndata, name
            if got.dtype == np.uint8:  # argmax maps: last-bit differences may flip a near-tie
                assert (got == alone[name]).mean() > 0.99, name
            else:  # padding is masked; CPU conv kernels differ by shape only in the last bits
                np.testing.assert_allclose(got, alone[name], rtol=1e-4, atol=1e-5)
        assert batched[k]["loc_x"].dtype == np.uint8 and batched[k]["size"].dtype == np.uint8


def test_length_batches_cap_count_and_cpu_pixels():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert length_batches([50] * 20, 16, cpu) == [slice(0, 16), slice(16, 20)]
    # 5 x 100^2 fit; a 200-mer beside them would not; then 2 x 200^2 <= CPU_BATCH_PIXELS < 3 x 200^2
    assert length_batches([100] * 5 + [200] * 5, 16, cpu) == [slice(0, 5), slice(5, 7), slice(7, 9), slice(9, 10)]
    assert length_batches([100] * 12, 16, cpu) == [slice(0, 10), slice(10, 12)]
    assert length_batches([100] * 5 + [200] * 5, 16, cuda) == [slice(0, 10)]
    assert length_batches([600, 700], 16, cpu) == [slice(0, 1), slice(1, 2)]  # one sequence even when over the cap
    assert length_batches([], 4, cpu) == []


def test_exact_targets_as_outputs_give_sensitivity_one():
    seq = "GGGAAAUCCCGCGCAUUAGCGCGUUAGCAAUGCUAACGGAUCCUAGCAUGCAUGGCUAGGAUCC"
    for db in fold(seq, num_sample=10, seed=2).samples:
        boxes = local_structure_boxes(pairs_from_db(db))
        proposals = decode_proposals(oracle_maps(len(seq), boxes), seq, 0.5)
        m = s1_sequence_metrics(stem_corners(boxes), proposals)
        assert m["bb_identical"] == m["bb_overlap"] == m["bp"] == m["bp_precision"] == 1.0
        assert m["proposals_per_stem"] == 1.0


def props(*boxes):
    """Proposals from (bb_x, bb_y, w) reference corners."""
    return proposals_from_lists([(box, ([0.9], [0.5], [], [])) for box in sorted(boxes)])


def test_metrics_on_hand_made_cases():
    stems = stem_corners([Box((0, 16), (4, 4), STEM)])  # pairs (0,19) (1,18) (2,17) (3,16)
    assert stems.tolist() == [[0, 19, 4]]
    identical = s1_sequence_metrics(stems, props((0, 19, 4)))
    assert (identical["bb_identical"], identical["bb_overlap"], identical["bp"]) == (1.0, 1.0, 1.0)
    shifted = s1_sequence_metrics(stems, props((1, 18, 3)))  # all numbers within 1, and on the same diagonal
    assert (shifted["bb_identical"], shifted["bb_overlap"], shifted["bp"]) == (0.0, 1.0, 0.75)
    assert shifted["bp_precision"] == 1.0
    overlapping = s1_sequence_metrics(stems, props((2, 30, 8)))  # rows 2-9, cols 23-30: no shared pixel
    assert overlapping["bb_overlap"] == 0.0
    overlapping = s1_sequence_metrics(stems, props((3, 21, 5)))  # rows 3-7, cols 17-21: shares (3, 17)
    assert (overlapping["bb_identical"], overlapping["bb_overlap"], overlapping["bp"]) == (0.0, 1.0, 0.0)
    disjoint = s1_sequence_metrics(stems, props((10, 30, 2), (11, 29, 1)))
    assert (disjoint["bb_overlap"], disjoint["bp"], disjoint["bp_precision"]) == (0.0, 0.0, 0.0)
    assert disjoint["proposals_per_stem"] == 2.0


def test_features_of_a_pair_covered_by_two_proposals_are_medians_of_both():
    proposals = proposals_from_lists([((0, 19, 3), ([0.9], [0.2], [0.6, 0.8], [0.1, 0.3])),
                                      ((1, 18, 2), ([0.5], [0.4], [], []))])
    f = pair_features(proposals)
    assert sorted(f) == [(0, 19), (1, 18), (2, 17)]
    np.testing.assert_allclose(f[(1, 18)], [2, 2, 0.7, 0.3, 0.7, 0.2])
    np.testing.assert_allclose(f[(0, 19)], [1, 2, 0.9, 0.2, 0.7, 0.2])
    row, complete = s2_row([Box((0, 17), (3, 3), STEM), Box((5, 10), (2, 2), STEM)], proposals, True)
    assert row["stem_bb_bps"] == [(0, 19), (1, 18), (2, 17)] and row["target_bps"] == [(0, 19), (1, 18), (2, 17)]
    assert not complete


def test_box_table_counts_medians_and_maxima_per_source():
    proposals = proposals_from_lists([((0, 19, 3), ([0.9], [0.2], [0.6, 0.8, 0.1], [0.1, 0.3, 0.7])),
                                      ((1, 18, 2), ([], [], [0.5], [0.4]))])
    table = box_table(proposals)
    assert table.dtype == np.float32 and table.shape == (2, len(BOX_COLUMNS))
    np.testing.assert_allclose(table[0], [0, 19, 3, 1, 3, 0.9, 0.2, 0.6, 0.3, 0.9, 0.7], rtol=1e-6)
    np.testing.assert_allclose(table[1], [1, 18, 2, 0, 1, 0, 0, 0.5, 0.4, 0.5, 0.4], rtol=1e-6)
    only_scalar = proposals_from_lists([((1, 18, 2), ([], [], [0.5], [0.4]))])  # no softmax-size pixel at all
    np.testing.assert_allclose(box_table(only_scalar), table[1:], rtol=1e-6)
    assert box_table(proposals_from_lists([])).shape == (0, len(BOX_COLUMNS))


@pytest.mark.slow
def test_train_infer_csv_png_and_s2_features_round_trip(tiny_s1_data, tmp_path):
    train_s1(tiny_s1_data, tmp_path / "runs" / "run_a", "--epoch", 1)
    train_s1(tiny_s1_data, tmp_path / "runs" / "run_b", "--epoch", 2, "--save_every", 1)
    out = tmp_path / "data" / "metric.csv"
    proc = run_script("evaluation/run_s1_inference.py", "--data", tiny_s1_data, "--threshold", 0.05, 0.2,
                      "--out", out, "--models", tmp_path / "runs" / "run_a", tmp_path / "runs" / "run_b",
                      "--num", 12, "--plot_dir", tmp_path / "plot")
    summary = pd.read_csv(out)
    assert list(zip(summary["run_id"], summary["epoch_id"], summary["threshold"])) == [
        ("run_a", 0, 0.05), ("run_a", 0, 0.2), ("run_b", 1, 0.05), ("run_b", 1, 0.2)]
    assert (summary["n_seq"] == 12).all()
    for col in ("bb_identical_mean", "bb_overlap_std", "bp_mean", "proposals_per_target_stem", "bp_precision"):
        assert col in summary.columns
    assert (summary["bb_identical_mean"] <= summary["bb_overlap_mean"]).all()
    per_seq = pd.read_csv(tmp_path / "data" / "metric_per_seq.csv")
    assert len(per_seq) == 12 * 4
    for png in ("s1_test_set_sensitivity.png", "s1_sensitivity_tradeoff.png"):
        assert (tmp_path / "plot" / png).read_bytes()[:4] == b"\x89PNG"
    assert "wrote" in proc.stderr

    s2 = tmp_path / "s2.pkl.gz"
    run_script("s2_data_gen/s1_pred_stem_processing.py", "--data", tiny_s1_data, "--threshold_p", 0.05,
               "--model", tmp_path / "runs" / "run_b" / "model_ckpt_ep_1.pth", "--out_file", s2,
               "--features", "--include_all", "--num", 10)
    df = pd.read_pickle(s2)
    assert len(df) > 0
    for _, row in df.iterrows():
        assert set(row["stem_bb_bps_features"]) == set(row["stem_bb_bps"])
        assert set(row["target_bps"]) <= set(row["stem_bb_bps"])
        assert all(len(v) == 6 for v in row["stem_bb_bps_features"].values())


def test_inference_errors(tiny_s1_data, tmp_path):
    not_s1 = tmp_path / "other.pth"
    save_checkpoint({"kind": "something_else", "model": {}}, not_s1)
    proc = run_script("evaluation/run_s1_inference.py", "--data", tiny_s1_data, "--out", tmp_path / "m.csv",
                      "--models", not_s1, check=False)
    assert "not an s1_stem_bb or s2_grammar checkpoint" in error_line(proc)
    no_structure = tmp_path / "seqs.pkl.gz"
    pd.DataFrame({"seq": ["ACGUACGU"]}).to_pickle(no_structure, compression="gzip")
    proc = run_script("evaluation/run_s1_inference.py", "--data", no_structure, "--out", tmp_path / "m.csv",
                      "--models", not_s1, check=False)
    assert "missing column(s) one_idx, bounding_boxes" in error_line(proc)
    proc = run_script("evaluation/run_s1_inference.py", "--data", tiny_s1_data, "--out", tmp_path / "m.csv",
                      "--threshold", "1.5", check=False)
    assert proc.returncode == 2 and "threshold must be in (0, 1)" in proc.stderr
    proc = run_script("s2_data_gen/s1_pred_stem_processing.py", "--data", tiny_s1_data, "--threshold_p", "0",
                      "--model", not_s1, "--out_file", tmp_path / "o.pkl.gz", check=False)
    assert "--threshold_p must be in (0, 1)" in error_line(proc)
    assert not (tmp_path / "m.csv").exists() and not (tmp_path / "o.pkl.gz").exists()


def test_size_catch_all_keeps_the_scalar_size_proposal_and_threshold_is_float64():
    one = np.ones((3, 3), np.float32)
    zero = np.zeros((3, 3), np.int64)
    maps = {"p_on": np.zeros((3, 3), np.float32), "loc_x": zero, "p_loc_x": one, "loc_y": zero, "p_loc_y": one,
            "size": np.full((3, 3), 10), "p_size": one, "size_scalar": one}
    maps["p_on"][0, 2] = 0.9
    for decode in (decode_proposals, slow_decode):
        props = decode(maps, "GAC", 0.5)
        assert (props.bx.tolist(), props.by.tolist(), props.w.tolist()) == ([0], [2], [1])
        assert props.source.tolist() == [1] and props.prob_on.tolist() == pytest.approx([0.9])
    # float32 0.1 is 0.10000000149 > 0.1: kept when compared in float64 (float32 would drop it)
    maps["p_on"][0, 2] = np.float32(0.1)
    assert len(decode_proposals(maps, "GAC", 0.1)) == len(slow_decode(maps, "GAC", 0.1)) == 1
    maps["p_on"][0, 2] = np.nextafter(np.float32(0.1), np.float32(0))
    assert len(decode_proposals(maps, "GAC", 0.1)) == len(slow_decode(maps, "GAC", 0.1)) == 0

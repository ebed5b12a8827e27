import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from conftest import REPO, error_line, train_s1
from stembb.checkpoint import S1_KIND, load_checkpoint, save_checkpoint
from stembb.s1.engine import binned_auc, s1_losses, train_one_epoch
from stembb.io import read_pickle
from stembb.s1.model import SimpleConvNet, build_model, pair_image
from stembb.s1.dataset import LengthBatchSampler, StemBoxDataset, collate
from stembb.structure import Box, pairs_from_db, local_structure_boxes
from stembb.s1.targets import one_hot, pack_targets, stem_targets, unpack_targets


def slow_targets(length, boxes, offset):
    """Per-pixel reference of docs/DESIGN.md's target definitions."""
    out = {k: np.zeros((length, length)) for k in ("stem_on", "location_x", "location_y", "sm_size", "sl_size",
                                                    "unmasked", "in_stem")}
    for i in range(length):
        for j in range(length):
            for (x0, y0), (wx, wy), kind in boxes:
                if kind != "pseudo_knot" and i < j and x0 - offset <= i < x0 + wx + offset \
                        and y0 - offset <= j < y0 + wy + offset:
                    out["unmasked"][i, j] = 1
                if kind == "stem" and x0 <= i < x0 + wx and y0 <= j < y0 + wy:
                    out["stem_on"][i, j] = out["in_stem"][i, j] = 1
                    out["location_x"][i, j] = min(i - x0, 11)
                    out["location_y"][i, j] = min(y0 + wy - 1 - j, 11)
                    out["sm_size"][i, j] = min(wx, 11) - 1
                    out["sl_size"][i, j] = wx
    return out


@pytest.mark.parametrize("db", ["((((((((((((....))))))))))))..((..((...))..))", "..((..[[..))..]]..", "(((...)))"])
def test_targets_match_per_pixel_reference(db):
    boxes = local_structure_boxes(pairs_from_db(db))
    fast = stem_targets(len(db), boxes, 2)
    slow = slow_targets(len(db), boxes, 2)
    for k in slow:
        np.testing.assert_array_equal(fast[k].astype(float), slow[k], err_msg=k)


def test_one_hot_and_pair_image():
    x = one_hot("ACGTUN")
    assert x.shape == (4, 6) and x[:, 5].sum() == 0 and x[3, 3] == x[3, 4] == 1
    img = pair_image(torch.from_numpy(x)[None])
    assert img.shape == (1, 8, 6, 6)
    assert torch.equal(img[0, :4, 2, 5], torch.from_numpy(x[:, 2])) and torch.equal(img[0, 4:, 2, 5], torch.from_numpy(x[:, 5]))


def test_output_is_l_by_l_for_any_widths():
    for widths in ([3], [9, 9], [3, 4, 5], [2]):
        net = SimpleConvNet([4] * len(widths), widths, [4], 4)
        out = net(torch.rand(2, 4, 17))
        assert {k: tuple(v.shape) for k, v in out.items()} == {
            "stem_on": (2, 1, 17, 17), "location_x": (2, 12, 17, 17), "location_y": (2, 12, 17, 17),
            "sm_size": (2, 11, 17, 17), "sl_size": (2, 1, 17, 17)}


def _grad_on_logits(mask_weight):
    boxes = [Box((2, 10), (3, 3), "stem")]
    _, packed = collate([(one_hot("GGGAAAAAACCCAAAAAAAA"), pack_targets(stem_targets(20, boxes, 1)))])
    t = unpack_targets(packed)
    logits = torch.zeros(1, 1, 20, 20, requires_grad=True)
    outputs = {"stem_on": logits, "location_x": torch.zeros(1, 12, 20, 20), "location_y": torch.zeros(1, 12, 20, 20),
               "sm_size": torch.zeros(1, 11, 20, 20), "sl_size": torch.zeros(1, 1, 20, 20)}
    s1_losses(outputs, t, mask_weight)["loss_stem_on"].backward()
    return logits.grad[0, 0], t


def test_masked_pixel_gets_no_gradient_with_mask_0_and_a_proportional_one_with_0_5():
    grad0, t = _grad_on_logits(0.0)
    outside = (~t["unmasked"][0]) & torch.ones(20, 20, dtype=torch.bool).triu(1)
    inside_off = t["unmasked"][0] & (t["stem_on"][0] == 0)
    assert outside.any() and inside_off.any()
    assert (grad0[outside] == 0).all() and (grad0[inside_off] != 0).all()
    assert (grad0.tril() == 0).all()  # below the diagonal never counts
    grad5, _ = _grad_on_logits(0.5)
    ratio = grad5[outside] / grad5[inside_off][0]
    assert torch.allclose(ratio, torch.full_like(ratio, 0.5))


def test_packed_targets_equal_the_unpacked_ones_padding_included():
    seqs = ["GGGGAAACCCCAAAGGAAACC", "GGGAAAACCCUUAG"]
    boxes = [[Box((0, 7), (4, 4), "stem"), Box((3, 3), (5, 5), "hairpin_loop"), Box((14, 19), (2, 2), "stem"),
              Box((0, 0), (21, 21), "pseudo_knot")], [Box((0, 7), (3, 3), "stem")]]
    items = [(one_hot(s), stem_targets(len(s), b, 2)) for s, b in zip(seqs, boxes)]
    _, packed = collate([(x, pack_targets(t)) for x, t in items])
    assert packed.dtype == torch.uint8 and packed.shape == (2, 5, 21, 21)
    got = unpack_targets(packed)
    for b, (x, t) in enumerate(items):
        n = x.shape[1]
        for k, v in t.items():
            assert got[k].dtype == torch.from_numpy(v).dtype, k
            assert torch.equal(got[k][b, :n, :n], torch.from_numpy(v)), k
        assert got["valid"][b, :n, :n].all() and not got["valid"][b, n:].any() and not got["valid"][b, :, n:].any()
        for k in ("unmasked", "in_stem", "stem_on", "sl_size"):
            assert not got[k][b, n:].any() and not got[k][b, :, n:].any()


def test_binned_auc_matches_sklearn():
    rng = np.random.default_rng(0)
    labels = rng.random(20000) < 0.2
    scores = np.clip(rng.normal(0.35 + 0.3 * labels, 0.2), 0, 1)
    bins = np.minimum((scores * 1000).astype(int), 999)
    neg = torch.bincount(torch.from_numpy(bins[~labels]), minlength=1000).double()
    pos = torch.bincount(torch.from_numpy(bins[labels]), minlength=1000).double()
    auroc, auprc = binned_auc(neg, pos)
    assert auroc == pytest.approx(roc_auc_score(labels, scores), abs=2e-3)
    assert auprc == pytest.approx(average_precision_score(labels, scores), abs=5e-3)


def test_length_batch_sampler_buckets_and_splits_ranks():
    lengths = np.random.default_rng(1).integers(20, 200, 103)
    s = LengthBatchSampler(lengths, 10, shuffle=True, seed=3)
    batches = list(s)
    assert sorted(i for b in batches for i in b) == list(range(103))
    assert all(lengths[b].max() - lengths[b].min() < 40 for b in batches)
    s.set_epoch(1)
    assert list(s) != batches
    ranks = [list(LengthBatchSampler(lengths, 10, True, 3, num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(LengthBatchSampler(lengths, 10, True, 3, 2, 0))
    assert {i for r in ranks for b in r for i in b} == set(range(103))
    # fewer batches than ranks: every rank still gets one (no rank waits alone in a collective)
    per_rank = [len(list(LengthBatchSampler(lengths[:25], 10, True, 3, num_replicas=8, rank=r))) for r in range(8)]
    assert per_rank == [1] * 8


def _tiny_loader(data, n=32):
    df = read_pickle(data)[:n]
    ds = StemBoxDataset(df["seq"].tolist(), df["bounding_boxes"].tolist(), 2)
    return torch.utils.data.DataLoader(ds, batch_sampler=LengthBatchSampler(df["seq"].str.len(), 8, True, 0),
                                       collate_fn=collate)


def test_training_steps_lower_the_loss(tiny_s1_data):
    torch.manual_seed(0)
    model = SimpleConvNet([8, 8], [3, 3], [8], 8)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    loader = _tiny_loader(tiny_s1_data)
    cpu = torch.device("cpu")
    first = train_one_epoch(model, opt, loader, cpu, 0, 0.0, show_progress=False).compute()["loss"]
    for epoch in range(1, 8):
        last = train_one_epoch(model, opt, loader, cpu, epoch, 0.0, show_progress=False).compute()["loss"]
    assert last < 0.8 * first


def test_non_finite_loss_stops_training(tiny_s1_data):
    model = SimpleConvNet([4], [3], [4], 4)
    with torch.no_grad():
        model.stem_on[2].bias.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite loss at epoch 0, step 0"):
        train_one_epoch(model, torch.optim.SGD(model.parameters(), 0.1), _tiny_loader(tiny_s1_data), torch.device("cpu"),
                        0, 0.0, show_progress=False)


def test_checkpoint_round_trip_gives_identical_predictions(tmp_path):
    config = {"num_filters": [4, 6], "filter_width": [3, 5], "hid_shared": [5], "hid_output": 4, "dropout": 0.1}
    model = build_model(config)
    model.train()
    model(torch.rand(3, 4, 15))  # move BatchNorm running statistics away from their start
    model.eval()
    path = tmp_path / "model_ckpt_ep_0.pth"
    save_checkpoint({"kind": S1_KIND, "model": model.state_dict(), "config": config}, path)
    state = load_checkpoint(path, S1_KIND)
    again = build_model(state["config"])
    again.load_state_dict(state["model"])
    again.eval()
    x = torch.rand(2, 4, 23)
    for k, v in model(x).items():
        assert torch.equal(v, again(x)[k])


@pytest.mark.slow
def test_script_outputs_and_resume_continues_at_next_epoch(tiny_s1_data, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    train_s1(tiny_s1_data, full, "--epoch", 3, "--save_every", 1)
    assert sorted(p.name for p in full.iterdir()) == ["metrics.csv", "metrics.png", "model_ckpt_ep_0.pth",
                                                      "model_ckpt_ep_1.pth", "model_ckpt_ep_2.pth", "run.log"]
    metrics = pd.read_csv(full / "metrics.csv")
    assert list(zip(metrics["epoch"], metrics["split"])) == [(e, s) for e in range(3) for s in ("train", "validation")]
    log = (full / "run.log").read_text()
    assert "command:" in log and "git commit:" in log and "seed: 0" in log and "epoch 2:" in log
    state = load_checkpoint(full / "model_ckpt_ep_2.pth", S1_KIND)
    assert state["epoch"] == 2 and state["config"]["num_filters"] == [4, 4] and "optimizer" in state

    train_s1(tiny_s1_data, part, "--epoch", 2, "--save_every", 10)
    assert sorted(p.name for p in part.glob("*.pth")) == ["model_ckpt_ep_1.pth"]
    proc = train_s1(tiny_s1_data, part, "--epoch", 3, "--save_every", 10, "--resume", part)
    assert "resuming from" in proc.stderr and "epoch 2:" in proc.stderr and "epoch 1:" not in proc.stderr
    resumed = pd.read_csv(part / "metrics.csv")
    timing = ["examples_per_s"]  # wall-clock throughput: the one column that may differ
    pd.testing.assert_frame_equal(resumed.drop(columns=timing), metrics.drop(columns=timing),
                                  rtol=1e-4)  # same split, same order, same result


@pytest.mark.slow
def test_torchrun_two_gloo_processes_write_one_set_of_outputs(tiny_s1_data, tmp_path):
    result = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(REPO / "s1_training/train_conv_pixel_stem_bb.py"), "--data", str(tiny_s1_data),
                           "--result", str(result), "--num_filters", "4", "--filter_width", "3", "--hid_output", "4",
                           "--epoch", "2", "--cpu", "0", "--device", "cpu", "--no_progress"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in result.iterdir()) == ["metrics.csv", "metrics.png", "model_ckpt_ep_1.pth", "run.log"]
    log = (result / "run.log").read_text()
    assert log.count("command:") == 1 and "processes: 2" in log
    assert len(pd.read_csv(result / "metrics.csv")) == 4


@pytest.mark.parametrize("extra, message", [
    (["--num_filters", "4", "4", "4"], "--num_filters has 3 values but --filter_width has 2"),
    (["--max_length", "10"], "no rows left after filtering"),
    (["--lr", "-0.1"], "--lr must be a positive finite number, got -0.1"),
    (["--dropout", "2"], "--dropout must be in [0, 1), got 2.0"),
    (["--device", "cuda"], "--device cuda: CUDA is not available on this machine"),
])
def test_errors_before_training(tiny_s1_data, tmp_path, extra, message):
    proc = train_s1(tiny_s1_data, tmp_path / "r", "--epoch", 1, *extra, check=False)
    assert message in error_line(proc)
    assert not list((tmp_path / "r").glob("*.pth"))


def test_unreadable_pickle_error(tmp_path):
    bad = tmp_path / "bad.pkl.gz"
    bad.write_bytes(b"garbage")
    proc = train_s1(bad, tmp_path / "r", "--epoch", 1, check=False)
    assert f"{bad}: not a readable pandas pickle" in error_line(proc)


@pytest.mark.slow
def test_resume_with_other_hyperparameters_is_refused(tiny_s1_data, tmp_path):
    train_s1(tiny_s1_data, tmp_path / "r", "--epoch", 1)
    proc = train_s1(tiny_s1_data, tmp_path / "r", "--epoch", 2, "--mask", "0.5", "--resume", tmp_path / "r", check=False)
    line = error_line(proc)
    assert "disagrees with the flags" in line and "--mask 0.0 in the checkpoint vs 0.5" in line
    assert sorted(p.name for p in (tmp_path / "r").glob("*.pth")) == ["model_ckpt_ep_0.pth"]


def test_pseudoknot_box_is_not_unmasked():
    pairs = [(0, 2), (1, 3)]
    t = stem_targets(4, local_structure_boxes(pairs), 0)
    assert sorted(zip(*np.nonzero(t["unmasked"]))) == [(0, 2), (1, 3)]



def test_explicit_gpu_index_under_torchrun_is_refused(monkeypatch):
    from stembb.distributed import init_distributed
    from stembb.errors import InputError
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(InputError, match="would put every rank on one GPU"):
        init_distributed("cuda:0")


@pytest.mark.slow
def test_a_diverging_training_loss_is_reported(tiny_s1_data, tmp_path):
    proc = train_s1(tiny_s1_data, tmp_path / "run", "--epochs", 3, "--lr", "1e6")
    assert "the run is diverging; --lr 1e+06 is likely too high" in proc.stderr

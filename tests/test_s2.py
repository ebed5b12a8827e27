"""S2: box relations, box decoding, the box transformer learning, calibration, the GNN baseline."""
import itertools

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import random_candidates, run_script
from stembb.boxes import stem_pairs, valid_boxes
from stembb.checkpoint import load_checkpoint, save_checkpoint
from stembb.errors import InputError
from stembb.data.folding import fold, sampled_energies_of
from stembb.metrics import pair_scores
from stembb.pipeline import add_predictor_args, make_predictor, predictor_from_checkpoints
from stembb.s2 import boxnet
from stembb.s2.candidates import BOX_COLUMNS
from stembb.s2.predictor import BoxPredictor
from stembb.grammar.decode import decode_structure
from stembb.grammar.assemble import SMALL_LOOPS, TERM_SHAPES, assemble, loop_counts, pair_type, small_loop_slot
from stembb.grammar.terms import LoopTerms, structure_score
from stembb.grammar.decode import decode_gains
from stembb.grammar.energy_fit import fit_terms_to_energies
from stembb.s2.engine import (S2_MODELS, _terms_hinge, calibrate_gamma, fit_terms, pair_max,
                              run_epoch, structured_hinge)
from stembb.structure import base_codes, canonical_pair_matrix, is_nested, pairs_from_db, stem_boxes, validate_pairs


def corners(boxes):
    """(n, 3) reference corners (bx, by, w) of Box tuples."""
    return np.array([(x0, y0 + w - 1, w) for (x0, y0), (w, _), _ in boxes], dtype=np.int64).reshape(-1, 3)


def test_relations_of_hand_made_boxes():
    # A (0,19,4); B stacked directly inside A; C crosses A; D = A shifted along its diagonal; E beside A
    bx, by, w = np.array([0, 4, 10, 1, 21]), np.array([19, 15, 25, 18, 29]), np.array([4, 2, 3, 3, 2])
    rel = boxnet.relations(bx, by, w)
    assert rel[0].tolist() == [0, 5, 3, 1, 4]  # B inside A with 0 unpaired bases between them
    assert rel[1, 0] == 11 and rel[3, 1] == 5 and rel[2, 4] == 3
    # a box two bases further in: bucket 1-2
    assert boxnet.relations(np.array([0, 5]), np.array([19, 14]), np.array([4, 2]))[0, 1] == 6
    # sharing a base on another diagonal
    assert boxnet.relations(np.array([0, 2]), np.array([19, 19]), np.array([4, 2]))[0, 1] == 2


def random_boxes(rng, seq, n):
    length = len(seq)
    bx = rng.integers(0, length, n)
    w = rng.integers(1, 7, n)
    by = bx + 2 * w + rng.integers(3, 30, n)
    keep = valid_boxes(bx, by, w, seq)
    return np.unique(np.stack([bx[keep], by[keep], w[keep]], axis=1), axis=0)


def table_of(boxes):
    table = np.zeros((len(boxes), len(BOX_COLUMNS)), dtype=np.float32)
    table[:, :3] = boxes
    return table


def random_terms(rng):
    terms = LoopTerms()
    with torch.no_grad():
        for p in terms.parameters():
            p.copy_(torch.as_tensor(rng.normal(size=tuple(p.shape))))
    return terms


def test_assembly_finds_the_best_scoring_structure():
    rng = np.random.default_rng(0)
    for _ in range(150):
        seq, pairs = random_candidates(rng, 8, 24, 4, 0.3)
        length = len(seq)
        pairs = pairs[rng.permutation(len(pairs))[:10]]
        unary = rng.normal(size=len(pairs))
        terms = random_terms(rng)
        index = {tuple(p): k for k, p in enumerate(pairs.tolist())}
        scores = {(): 0.0}
        with torch.no_grad():
            for r in range(1, len(pairs) + 1):
                for c in itertools.combinations(map(tuple, pairs.tolist()), r):
                    bases = [b for p in c for b in p]
                    if len(set(bases)) == len(bases) and is_nested(c):
                        scores[c] = float(structure_score(seq, list(c), index, torch.as_tensor(unary), terms))
            got = assemble(seq, pairs, unary, terms.numpy())
            got_score = float(structure_score(seq, got, index, torch.as_tensor(unary), terms)) if got else 0.0
        assert got_score == pytest.approx(max(scores.values()))
        # with no loop terms it is the plain maximum-gain DP
        assert assemble(seq, pairs, unary, LoopTerms().numpy()) == decode_gains(length, pairs, unary)


def test_a_small_internal_loop_has_one_slot_whichever_pair_it_is_read_from():
    # the same 2 x 1 loop, G0-C9 around G3-C7 with A C | U, read from G3-C7 it is C-G, U | A C, C-G
    for seq, outer, inner, expect in (("GACGAAACUC", (0, 9), (3, 7), (1, (3, 3, 3, 0, 1))),
                                      ("CUCAAAGACG", (0, 9), (2, 6), (1, (3, 3, 3, 0, 1))),
                                      ("GACAAAGUC", (0, 8), (2, 6), (0, (2, 3, 0, 3)))):
        codes = base_codes(seq)
        table, slot = small_loop_slot(codes, pair_type(codes, *outer), pair_type(codes, *inner), *outer, *inner)
        assert (table, np.unravel_index(slot, TERM_SHAPES[SMALL_LOOPS[table]])) == expect
    # the 1 x 1 loop above read from its inner pair is G-C, U | A, C-G: slot (2, 3, 3, 0), the larger
    assert loop_counts("GACAAAGUC", [(0, 8), (2, 6)])[1]["int11"].nonzero()[0].tolist() == [
        np.ravel_multi_index((2, 3, 0, 3), TERM_SHAPES["int11"])]
    assert small_loop_slot(base_codes("GAAGAAACAAAC"), 2, 2, 0, 11, 3, 7)[0] == -1  # 2 x 3: none


def test_box_decoding_is_always_a_valid_structure_on_box_pairs():
    rng = np.random.default_rng(1)
    model = boxnet.build_boxnet({"dim": 8, "layers": 1, "heads": 2, "dropout": 0.0})
    for _ in range(60):
        length = int(rng.integers(15, 90))
        seq = "".join(rng.choice(list("ACGU"), length))
        boxes = random_boxes(rng, seq, int(rng.integers(1, 80)))
        example = boxnet.box_example(seq, table_of(boxes))
        model.terms = random_terms(rng)
        out = S2_MODELS["box"].decode(model, example, rng.normal(size=len(boxes)) * 3, float(rng.uniform(0.2, 30)))
        validate_pairs(out, length)
        assert is_nested(out)
        on_boxes = {p for b in boxes for p in stem_pairs(((b[0], b[1] - b[2] + 1), (b[2], b[2]), "stem"))}
        canonical = canonical_pair_matrix(seq)
        assert all(p in on_boxes and canonical[p] and p[1] - p[0] > 3 for p in out)


def test_box_decoding_returns_the_consistent_high_scoring_set():
    rng = np.random.default_rng(2)
    seq = "GGGAAAUCCCGCGCAUUAGCGCGUUAGCAAUGCUAACGGAUCCUAGCAUGCAUGGCUAGGAUCC"
    truth = pairs_from_db(fold(seq, partition=False).mfe_structure)
    true_boxes = corners(stem_boxes(truth))
    decoys = random_boxes(rng, seq, 300)
    decoys = decoys[~(decoys[:, None, :] == true_boxes[None]).all(2).any(1)]
    assert len(decoys) > 20
    example = boxnet.box_example(seq, table_of(np.concatenate([true_boxes, decoys])))
    logits = np.r_[np.full(len(true_boxes), 4.0), rng.uniform(-8, -3, len(decoys))]
    model = boxnet.build_boxnet({"dim": 8, "layers": 1, "heads": 2, "dropout": 0.0})
    for gamma in (0.5, 1.0, 8.0):
        assert S2_MODELS["box"].decode(model, example, logits, gamma) == truth


def all_valid_boxes(seq, sizes=(3, 4, 5, 6)):
    """Every canonical stem box of the given sizes enclosing at least 3 bases."""
    length = len(seq)
    out = []
    for w in sizes:
        bx, by = np.meshgrid(np.arange(length), np.arange(length), indexing="ij")
        bx, by = bx.ravel(), by.ravel()
        keep = (by - bx >= 2 * w + 2) & valid_boxes(bx, by, np.full(len(bx), w), seq)
        out.append(np.stack([bx[keep], by[keep], np.full(keep.sum(), w)], axis=1))
    return np.concatenate(out)


def synthetic_examples(n, seed):
    """Random sequences whose candidates are canonical stem boxes of 3-5 pairs; the
    reference is the best structure made of the boxes with only GC pairs. The S1 evidence
    is the same noise for every box: only the boxes' sequence tells right from wrong."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        seq = "".join(rng.choice(list("ACGU"), int(rng.integers(40, 60))))
        pool = all_valid_boxes(seq, (3, 4, 5))
        boxes = pool[rng.permutation(len(pool))[:30]]
        gc_only = np.array([all(seq[i] + seq[j] in ("GC", "CG") for i, j in
                                stem_pairs(((x, y - w + 1), (w, w), "stem"))) for x, y, w in boxes])
        pairs, probs = pair_max(boxnet.box_example(seq, table_of(boxes)), gc_only.astype(float))
        truth = decode_structure(len(seq), pairs, probs, 1.0, seq)
        if not truth or gc_only.all():
            continue
        table = np.zeros((len(boxes), len(BOX_COLUMNS)), dtype=np.float32)
        table[:, :3] = boxes
        table[:, 3:5] = rng.integers(1, 5, (len(boxes), 2))
        table[:, 5:] = rng.random((len(boxes), len(BOX_COLUMNS) - 5))
        out.append((seq, truth, table))
    return out


def s1_prob_f1(data):
    """Mean decoded F1 of the S1-probability baseline at its best gamma."""
    scores = []
    for gamma in (1.0, 4.0, 16.0):
        f1 = []
        for seq, truth, table in data:
            pairs, probs = pair_max(boxnet.box_example(seq, table), np.maximum(table[:, 5], table[:, 7]))
            f1.append(pair_scores(decode_structure(len(seq), pairs, probs, gamma, seq), truth)["f1"])
        scores.append(np.mean(f1))
    return max(scores)


def hidden_terms_examples(hidden, n, seed):
    """Box examples whose reference is the structure ``hidden`` loop terms assemble from
    the boxes' pairs (every pair scoring ``hidden.pair_bias``)."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        seq = "".join(rng.choice(list("ACGU"), int(rng.integers(30, 60))))
        boxes = random_boxes(rng, seq, 150)
        pairs = boxnet.box_example(seq, table_of(boxes))["pairs"]
        truth = assemble(seq, pairs, np.full(len(pairs), float(hidden.pair_bias.detach())), hidden.numpy())
        if truth:
            out.append((boxnet.box_example(seq, table_of(boxes), truth), truth))
    return out


def test_loop_terms_alone_learn_structures_made_by_hidden_terms():
    rng = np.random.default_rng(5)
    hidden = random_terms(rng)
    with torch.no_grad():  # the per-base tables need more data than a test has: off
        for name in ("hairpin_mismatch", "loop_mismatch", "mismatch_1x1", "dangle", "triloop", "tetraloop") + SMALL_LOOPS:
            getattr(hidden, name).zero_()
        hidden.pair_bias.fill_(4.0)
    train, val = hidden_terms_examples(hidden, 60, 6), hidden_terms_examples(hidden, 30, 7)
    model = boxnet.build_boxnet({"dim": 8, "layers": 1, "heads": 2, "dropout": 0.0})
    spec = S2_MODELS["box"]
    silent = [np.zeros(len(e["numeric"])) for e, _ in val]

    def val_f1():
        return np.mean([pair_scores(spec.decode(model, e, x, 1.0), truth)["f1"] for (e, truth), x in zip(val, silent)])

    with torch.no_grad():
        model.terms.pair_bias.fill_(1.0)
    pair_count = val_f1()  # no loop terms: the most pairs
    losses = []
    fit_terms(model, [e for e, _ in train], 12, 0.1, 8, 0, lambda epoch, loss: losses.append(loss))
    assert float(model.terms.pair_weight.detach()) == 0.0  # the network's logits do not count yet
    assert losses[-1] < 0.5 * losses[0], losses
    assert val_f1() > pair_count + 0.1, (val_f1(), pair_count)


def test_batched_loop_term_loss_equals_the_per_example_hinge():
    rng = np.random.default_rng(8)
    hidden = random_terms(rng)
    with torch.no_grad():
        hidden.pair_bias.fill_(4.0)
    examples = [e for e, _ in hidden_terms_examples(hidden, 12, 9)]
    terms = random_terms(rng)  # another set: margins of every sign
    slow = torch.stack([structured_hinge(torch.zeros(len(e["numeric"])), e, terms) for e in examples]).mean()
    fast = _terms_hinge(examples, terms)
    assert fast.item() == pytest.approx(slow.item(), rel=1e-5) and slow.item() > 0
    grads = [torch.autograd.grad(loss, [terms.stack, terms.pair_bias]) for loss in (slow, fast)]
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-5)


def test_box_transformer_learns_what_the_s1_evidence_cannot_tell():
    torch.manual_seed(0)
    spec = S2_MODELS["box"]
    train_data, val_data = synthetic_examples(60, 3), synthetic_examples(20, 4)
    train = [boxnet.box_example(s, t, truth) for s, truth, t in train_data]
    val = [boxnet.box_example(s, t, truth) for s, truth, t in val_data]
    model = boxnet.build_boxnet({"dim": 32, "layers": 2, "heads": 4, "dropout": 0.0})
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    device = torch.device("cpu")
    before, _ = run_epoch(model, spec, train, device, 16)
    for epoch in range(12):
        run_epoch(model, spec, train, device, 16, optimizer, np.random.default_rng(epoch), epoch)
    after, _ = run_epoch(model, spec, train, device, 16)
    assert after["loss"] < 0.7 * before["loss"], (before, after)
    _, probs = run_epoch(model, spec, val, device, 16)
    refs = [truth for _, truth, _ in val_data]
    gamma, scores = calibrate_gamma(model, spec, val, probs, refs)
    baseline = s1_prob_f1(val_data)
    assert scores[gamma] > baseline + 0.2, (scores, baseline)


def test_box_transformer_gives_the_same_logits_with_and_without_grad():
    # training multiplies one-hot relations, inference gathers: the same numbers either way
    torch.manual_seed(1)
    model = boxnet.build_boxnet({"dim": 32, "layers": 2, "heads": 4, "dropout": 0.0}).eval()
    examples = [boxnet.box_example(s, t) for s, _, t in synthetic_examples(3, 5)]
    batch = boxnet.collate_boxes(examples)
    with torch.no_grad():
        gathered = model(batch)
    multiplied = model(batch)
    assert multiplied.requires_grad and not gathered.requires_grad
    assert gathered.shape == (sum(len(e["numeric"]) for e in examples),)
    torch.testing.assert_close(gathered, multiplied.detach(), rtol=1e-5, atol=1e-6)


def test_calibrated_gamma_is_stored_and_is_the_cli_default(s2_models):
    _, s1, box, gnn = s2_models
    import argparse
    for path in (box, gnn):
        state = load_checkpoint(path, (boxnet.KIND, "s2_gnn"))
        plain = torch.load(path, weights_only=True)  # plain values only: the safe default load reads it
        assert plain["history"] == state["history"] and isinstance(plain["history"][0]["loss"], float)
        assert state["decode_gamma"] in state["gamma_scores"]
        assert state["gamma_scores"][state["decode_gamma"]] == max(state["gamma_scores"].values())
        parser = argparse.ArgumentParser()
        add_predictor_args(parser)
        args = parser.parse_args(["--s1_model", str(s1), "--s2_model", str(path)])
        assert make_predictor(args).gamma == state["decode_gamma"]
        args = parser.parse_args(["--s1_model", str(s1), "--s2_model", str(path), "--gamma", "7.5"])
        assert make_predictor(args).gamma == 7.5


def test_gnn_baseline_and_box_model_both_predict(s2_models, tiny_s1_data, tmp_path):
    _, s1, box, gnn = s2_models
    seqs = pd.read_pickle(tiny_s1_data)["seq"].tolist()[:6]
    for path in (box, gnn):
        predictor = BoxPredictor.from_checkpoints(s1, path, torch.device("cpu"), threshold=0.05)
        for seq, pairs in zip(seqs, predictor.predict(seqs)):
            validate_pairs(pairs, len(seq))
            assert is_nested(pairs)
    # a box model whose logits have weight 0 decodes the same without running its network
    predictor = BoxPredictor.from_checkpoints(s1, box, torch.device("cpu"), threshold=0.05)
    with torch.no_grad():
        predictor.s2_model.terms.pair_weight.fill_(1.0)
    with_logits = predictor.predict(seqs)
    assert predictor.timings["s2"] > 0
    calls = []
    predictor.s2_model.register_forward_hook(lambda *_: calls.append(1))
    predictor.predict(seqs)
    assert calls
    proposals = predictor.proposals(seqs)
    examples = [S2_MODELS["box"].from_proposals(s, p, predictor.s2_config) for s, p in zip(seqs, proposals)]
    with torch.no_grad():
        predictor.s2_model.terms.pair_weight.zero_()
        logits = [predictor.s2_model(boxnet.collate_boxes([e])).double().numpy() if e else None for e in examples]
    expected = [S2_MODELS["box"].decode(predictor.s2_model, e, x, predictor.gamma) if e else []
                for e, x in zip(examples, logits)]
    calls.clear()
    assert predictor.predict(seqs) == expected and not calls
    assert with_logits != expected or all(not e for e in examples)
    out = tmp_path / "ablation.csv"
    run_script("evaluation/run_s2_ablation.py", "--s1_model", s1, "--s2_models", box, gnn, "--data", tiny_s1_data,
               "--num", 10, "--threshold_p", 0.05, "--out", out)
    table = pd.read_csv(out)
    assert table["method"].tolist() == ["oracle", "s1_prob", f"box:{box.name}", f"gnn:{gnn.name}"]
    assert {"precision", "recall", "f1", "f1_slip", "gamma", "seconds_per_seq"} <= set(table.columns)
    assert table.set_index("method").loc["oracle", "f1"] >= table["f1"].max() - 1e-9
    assert (tmp_path / "ablation.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_s2_init_fine_tunes_from_a_checkpoint_and_refuses_another_architecture(s2_models, tmp_path):
    root, _, box, _ = s2_models
    common = ["--input_data", root / "s2.pkl.gz", "--epochs", 1, "--batch_size", 8, "--layers", 1, "--heads", 2,
              "--no_progress", "--init", box]
    run_script("s2_training/train_s2_box.py", *common, "--dim", 16, "--log", tmp_path / "ft.log")
    log = (tmp_path / "ft.log").read_text()
    assert "(--init); new optimizer, epoch 0" in log
    tuned = load_checkpoint(tmp_path / "ft.model_ckpt_ep_0.pth", boxnet.KIND)
    start = load_checkpoint(box, boxnet.KIND)
    assert tuned["epoch"] == 0 and tuned["config"] == start["config"]
    proc = run_script("s2_training/train_s2_box.py", *common, "--dim", 32, "--log", tmp_path / "bad.log", check=False)
    assert proc.returncode == 2 and "another architecture: dim 16 there vs 32 here" in proc.stderr.splitlines()[-1]


def test_an_unknown_s2_checkpoint_kind_is_named(tmp_path):
    save_checkpoint({"kind": "s2_box", "model": {}}, tmp_path / "old.pth")
    with pytest.raises(InputError, match=r"old.pth: not an s2_box2 or s2_gnn or s2_grammar checkpoint \(found 's2_box'\)"):
        predictor_from_checkpoints(None, tmp_path / "old.pth")


def test_loop_terms_fitted_to_vienna_energies_fold_like_it():
    rng = np.random.default_rng(11)
    seqs = ["".join(rng.choice(list("ACGU"), int(rng.integers(40, 70)))) for _ in range(40)]
    folded = sampled_energies_of(seqs, 20, seed=3)
    assert folded == sampled_energies_of(seqs, 20, seed=3, workers=2)  # same draws in any number of processes
    for seq, (structures, _) in zip(seqs, folded):
        assert structures[0] == fold(seq, partition=False).mfe_structure and len(set(structures)) == len(structures)
    samples = [(seq, [pairs_from_db(s) for s in structures], energies) for seq, (structures, energies) in zip(seqs, folded)]
    terms = LoopTerms()
    rmse = fit_terms_to_energies(terms, samples)
    assert rmse < 0.3 and float(terms.pair_weight.detach()) == 0.0
    # the fitted S(y) is minus the energy: ViennaRNA's MFE structures come back from all canonical pairs
    f1 = []
    for seq, (structures, _) in zip(seqs, folded):
        pairs = np.argwhere(np.triu(canonical_pair_matrix(seq), 4))
        got = assemble(seq, pairs, np.full(len(pairs), float(terms.pair_bias.detach())), terms.numpy())
        f1.append(pair_scores(got, pairs_from_db(structures[0]))["f1"])
    assert np.mean(f1) > 0.9, np.mean(f1)

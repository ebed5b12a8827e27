"""The deep S1 inside the grammar model: its network, the gradient it gets through the
partition function, its training by the grammar trainer, and folding with it."""
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import error_line, run_script
from stembb.checkpoint import S2_GRAMMAR_KIND, read_arrays
from stembb.grammar import crf
from stembb.grammar.model import GrammarFold
from stembb.grammar.network import network_scores, pair_logits
from stembb.io import write_pickle
from stembb.pipeline import SHIPPED_S2, predictor_from_checkpoints
from stembb.s1.model import DEEP_NETWORKS, build_model, grammar_channels
from stembb.s1.targets import one_hot
from stembb.structure import local_structure_boxes

SEQ = "GGGACAUAGCUCAGGCUAGUCCCAAUGCGGAUCC"
REFERENCE = [(0, 22), (1, 21), (2, 20), (8, 15)]


def deep_model(name="deep16", seed=0):
    """A grammar model on the shipped loop terms with a fresh deep S1 whose pair head is
    randomised (an untrained one adds exactly 0)."""
    torch.manual_seed(seed)
    fold = GrammarFold.from_state(read_arrays(SHIPPED_S2, S2_GRAMMAR_KIND))
    model = crf.GrammarCRF(network=asdict(DEEP_NETWORKS[name]))
    with torch.no_grad():
        for name, value in fold.terms.items():
            getattr(model.terms, name).copy_(torch.as_tensor(value))
        torch.nn.init.normal_(model.network.pair[-1].weight, std=0.3)
    return model


def with_view(model, seq, reference=None):
    example = model.example(seq, reference=reference)
    model.folding(network=False).add_grammar_views([example])
    example.full_reference = reference
    return example


def test_grammar_channels_hold_the_ensemble_both_ways():
    pairs = np.array([[0, 6], [1, 5], [0, 7]])
    probs = np.array([0.5, 0.25, 0.125], dtype=np.float32)
    ch = grammar_channels(8, pairs, probs, [(0, 6)])
    assert ch.shape == (4, 8, 8) and ch[0, 0, 6] == ch[0, 6, 0] == 0.5 and ch[0, 1, 5] == 0.25
    assert ch[1, 0, 3] == pytest.approx(1 - 0.625) and ch[2, 3, 0] == pytest.approx(1 - 0.625)
    assert ch[1, 2, 0] == 1 and ch[3, 0, 6] == ch[3, 6, 0] == 1 and ch[3].sum() == 2


def test_deep_network_sees_100_nt_and_starts_as_the_grammar_alone():
    net = build_model(asdict(DEEP_NETWORKS["deep16"]))
    assert DEEP_NETWORKS["deep16"].receptive_field >= 100
    out = net(torch.from_numpy(one_hot(SEQ))[None], grammar=torch.zeros(1, 4, len(SEQ), len(SEQ)))
    assert {k: v.shape[1] for k, v in out.items()} == {"stem_on": 1, "location_x": 12, "location_y": 12,
                                                      "sm_size": 11, "sl_size": 1, "pair": 1, "pair_on": 1}
    assert out["pair"].abs().max() == 0  # zero-initialised: the grammar alone until it learns
    # a base 80 nt away changes the pixel: the view is that wide
    far = SEQ + "A" * 80
    near = net(torch.from_numpy(one_hot(far))[None], grammar=torch.zeros(1, 4, len(far), len(far)))["stem_on"]
    changed = net(torch.from_numpy(one_hot(far[:-1] + "G"))[None],
                  grammar=torch.zeros(1, 4, len(far), len(far)))["stem_on"]
    assert (near[0, 0, 0, 20] - changed[0, 0, 0, 20]).abs() > 0
    with pytest.raises(ValueError, match="grammar"):
        net(torch.from_numpy(one_hot(SEQ))[None])


def test_the_network_gets_pair_probability_minus_the_reference_through_the_partition_function():
    model = deep_model()
    example = with_view(model, SEQ, REFERENCE)
    outputs = {k: v for k, v in model.network(torch.from_numpy(one_hot(SEQ))[None], grammar=torch.from_numpy(
        grammar_channels(len(SEQ), example.pairs, *example.grammar))[None]).items()}
    logits = pair_logits(outputs, example.pairs)
    logits.retain_grad()
    unary = model.unary(example) + logits
    model.nll(example, unary).backward()
    fold = model.folding()
    example.network_score, example.pair_map = network_scores(fold.network, example)
    ens = fold.ensemble(example)
    indicator = np.array([tuple(p) in set(REFERENCE) for p in example.pairs.tolist()], dtype=float)
    assert np.abs(example.network_score).max() > 0.01
    np.testing.assert_allclose(logits.grad.numpy(), ens.probs - indicator, atol=1e-5)


def test_a_trained_network_folds_the_same_through_the_checkpoint(tmp_path):
    model = deep_model()
    example = with_view(model, SEQ)
    fold = model.folding()
    fold.add_network_scores([example])
    direct = fold.ensemble(example).probs
    from stembb.grammar.network import network_entry
    from stembb.checkpoint import save_checkpoint
    path = tmp_path / "m.pth"
    save_checkpoint({"kind": "s2_grammar", "model": {f"terms.{k}": torch.as_tensor(v) for k, v in fold.terms.items()},
                     "config": model.config, "network": network_entry(model.network)}, path)
    predictor = predictor_from_checkpoints(None, path)
    structures, ensembles, _ = predictor.fold([SEQ])
    np.testing.assert_allclose(ensembles[0].probs, direct, atol=1e-6)
    alone = predictor_from_checkpoints(None, SHIPPED_S2).fold([SEQ])[1][0].probs
    assert np.abs(alone - direct).max() > 1e-3  # the network moved the ensemble
    assert predictor.timings["s1_forward"] > 0


def structures_frame(rng, n, split):
    rows = []
    for _ in range(n):
        stem = "".join(rng.choice(list("GC"), 5))
        loop = "".join(rng.choice(list("AU"), int(rng.integers(4, 8))))
        tail = "".join(rng.choice(list("ACGU"), int(rng.integers(3, 10))))
        mate = stem[::-1].translate(str.maketrans("GC", "CG"))
        seq = tail + stem + loop + mate + tail
        one_idx = [[], []]
        for k in range(5):
            one_idx[0].append(len(tail) + k)
            one_idx[1].append(len(tail) + 2 * 5 + len(loop) - 1 - k)
        pairs = list(zip(*one_idx))
        rows.append({"seq": seq, "one_idx": (np.array(one_idx[0]), np.array(one_idx[1])),
                     "bounding_boxes": local_structure_boxes(pairs), "split": split})
    return pd.DataFrame(rows)


@pytest.mark.slow
def test_train_s2_grammar_trains_a_deep_s1_on_fixed_loop_terms(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "d.pkl.gz"
    knot = pd.DataFrame([{"seq": "GGGAAACCCACCCAAAAGGGAA", "one_idx": (np.array([0, 1, 2, 6, 7, 8]),
                                                                       np.array([12, 11, 10, 19, 18, 17])),
                          "bounding_boxes": local_structure_boxes([(0, 12), (1, 11), (2, 10), (6, 19), (7, 18),
                                                                   (8, 17)]), "split": "val"}])
    write_pickle(pd.concat([structures_frame(rng, 12, "train"), structures_frame(rng, 4, "val"), knot],
                           ignore_index=True), data)
    out = tmp_path / "deep.pth"
    proc = run_script("s2_training/train_s2_grammar.py", "--data", data, "--out", out, "--deep_s1", "deep16",
                      "--epochs", 2, "--batch_size", 4, "--epoch_size", 8, "--network_lr", 0.01, "--keep_last",
                      "--no_progress")
    assert "stem-box heads' loss" in proc.stderr and "receptive field 153 nt" in proc.stderr
    assert "pseudoknot layer on 1 pseudoknotted validation references" in proc.stderr
    state = torch.load(out, weights_only=True)
    shipped = torch.load(SHIPPED_S2, weights_only=True)
    assert state["network"]["config"]["arch"] == "deep" and state["epoch"] == 1
    for name, value in state["model"].items():  # the loop terms and pair bias stayed as they were
        assert torch.equal(value, shipped["model"][name]), name
    pair_head = state["network"]["model"]["pair.2.weight"]
    assert pair_head.abs().sum() > 0  # it learned
    fasta = tmp_path / "in.fa"
    fasta.write_text(">a\n" + structures_frame(rng, 1, "test")["seq"][0] + "\n")
    proc = run_script("evaluation/predict_structure.py", "--s2_model", out, "--fasta", fasta)
    assert proc.stdout.startswith(">a")
    csv = tmp_path / "s1.csv"
    run_script("evaluation/run_s1_inference.py", "--data", data, "--models", out, "--out", csv, "--threshold", 0.1,
               0.5, "--plot_dir", tmp_path)
    summary = pd.read_csv(csv)
    assert len(summary) == 2 and summary["n_seq"].eq(17).all() and summary["bp_mean"].between(0, 1).all()
    bad = run_script("s2_training/train_s2_grammar.py", "--data", data, "--out", tmp_path / "x.pth", "--deep_s1",
                     "deep16", "--heads_weight", -1, check=False)
    assert "--heads_weight must be at least 0" in error_line(bad)

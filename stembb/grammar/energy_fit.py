"""The loop grammar's energy fit: its terms set to the least-squares fit of ViennaRNA's
free energies of sampled structures. Both the shipped grammar (``stembb.grammar.crf``, which
starts from this fit and is pulled toward it) and the box transformer start from it."""
from __future__ import annotations

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch

from stembb.grammar.assemble import TERM_SHAPES, loop_counts


def fit_terms_to_energies(terms, samples, damp: float = 0.01) -> float:
    """Set the loop terms and ``pair_bias`` to the least-squares fit of ``S(y)`` (every
    pair scoring ``pair_bias``; ``pair_weight`` set to 0) to minus the free energy of each
    structure ``y`` of ``samples``: ``(seq, structures as pair lists, energies in
    kcal/mol)`` per sequence. ``S(y)`` is linear in the terms (``loop_counts``), so this is
    one sparse linear least-squares problem (LSQR, ridge ``damp``: entries no structure
    uses stay 0). Returns the fit's root-mean-square error, kcal/mol."""
    names = list(TERM_SHAPES)

    rows, cols, values, target = [], [], [], []
    for seq, structures, energies in samples:
        for y, energy in zip(structures, energies):
            pairs, counts = loop_counts(seq, y)
            vector = np.concatenate([counts[name] for name in names] + [[len(pairs)]])
            nonzero = np.flatnonzero(vector)
            rows.append(np.full(len(nonzero), len(target)))
            cols.append(nonzero)
            values.append(vector[nonzero])
            target.append(-energy)
    n_terms = sum(int(np.prod(TERM_SHAPES[name])) for name in names) + 1
    counts = scipy.sparse.csr_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
                                     shape=(len(target), n_terms))
    target = np.asarray(target)
    theta = scipy.sparse.linalg.lsqr(counts, target, damp=damp, atol=1e-8, btol=1e-8, iter_lim=20000)[0]
    start = 0
    with torch.no_grad():
        for name in names:
            param = getattr(terms, name)
            param.copy_(torch.as_tensor(theta[start:start + param.numel()].reshape(param.shape)))
            start += param.numel()
        terms.pair_bias.fill_(float(theta[-1]))
        terms.pair_weight.zero_()
    return float(np.sqrt(np.mean((counts @ theta - target) ** 2)))

"""The loop grammar, the shipped model, in numpy and compiled loops: its score and best
structure (``assemble``), partition function and pair probabilities (``partition``),
MEA decoder (``decode``) and the folding object that owns them (``model.GrammarFold``).
Training, in torch: the loop terms as parameters (``terms``), the energy fit they start
from (``energy_fit``), the conditional log-likelihood (``crf``) and the references it
learns from (``references``). Nothing here imports S1 or the two-stage networks of
``stembb.s2``, which import from here."""

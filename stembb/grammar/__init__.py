"""The loop grammar, the shipped model: its terms and best structure (``assemble``), its
partition function and pair probabilities (``partition``), the MEA decoder (``decode``),
the energy fit it starts from (``energy_fit``) and the likelihood model that owns them
all (``crf.GrammarFold``). Nothing here imports S1 or the two-stage networks of
``stembb.s2``, which import from here."""

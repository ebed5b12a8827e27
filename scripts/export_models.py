"""Export an S1 and an S2 checkpoint as the shipped model (models/stembb_s1.pth, and
models/stembb_s2.pth for a grammar model, the default of the end-to-end scripts, or
models/stembb_s2_box.pth for a box or graph S2, the two-stage model kept for comparison):
weights and configuration only, no optimizer state, with the exporting commit recorded.
A tree with uncommitted changes to tracked files is refused (the recorded commit would
not be the code that made the model) unless --allow_dirty.

    python scripts/export_models.py S1_CHECKPOINT S2_CHECKPOINT
"""
import argparse
from pathlib import Path

from stembb.cli import HelpFormatter
from stembb.checkpoint import S1_KIND, S2_GRAMMAR_KIND, export_weights, load_checkpoint
from stembb.errors import InputError, run_main
from stembb.pipeline import S2_CHECKPOINT_KINDS, SHIPPED_S1, SHIPPED_S2, SHIPPED_TWO_STAGE_S2
from stembb.runlog import git_commit


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("s1", type=Path, help="S1 checkpoint")
    p.add_argument("s2", type=Path, help="S2 checkpoint (grammar, box or gnn)")
    p.add_argument("--allow_dirty", action="store_true",
                   help="export from a tree with uncommitted changes (the model card must then say what they were)")
    return p


def main(args) -> None:
    load_checkpoint(args.s1, S1_KIND)  # both readable and of their kind before models/ changes: never half a pair
    s2_dst = SHIPPED_S2 if load_checkpoint(args.s2, S2_CHECKPOINT_KINDS)["kind"] == S2_GRAMMAR_KIND else SHIPPED_TWO_STAGE_S2
    commit = git_commit()
    if commit.endswith("-dirty") and not args.allow_dirty:
        raise InputError(f"the tree has uncommitted changes ({commit}); commit them first, so that models/ records "
                         "the code that made the model, or pass --allow_dirty")
    for src, dst, kind in ((args.s1, SHIPPED_S1, S1_KIND), (args.s2, s2_dst, S2_CHECKPOINT_KINDS)):
        export_weights(src, dst, kind, exported_from_commit=commit)
    print("wrote", SHIPPED_S1, s2_dst)


if __name__ == "__main__":
    run_main(lambda: main(get_args_parser().parse_args()))

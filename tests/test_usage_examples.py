"""Every script's parser accepts the usage examples its own docstring gives."""
import re
import runpy
import shlex

import pytest

from conftest import REPO

SCRIPTS = sorted(str(p.relative_to(REPO)) for folder in ("s1_data_gen", "s2_data_gen", "s1_training", "s2_training",
                                                          "evaluation", "scripts") for p in (REPO / folder).glob("*.py")
                 if "def get_args_parser" in p.read_text())


def usage_examples(doc: str, script: str) -> list[list[str]]:
    """The command lines of ``doc`` that run ``script`` (continuations joined, optional
    ``[...]`` parts and ``a|b`` choices reduced to their first form), as argv lists;
    lines with a ``<placeholder>`` are prose, not commands."""
    text = re.sub(r"\\\s*\n\s*", " ", doc)
    name = script.rsplit("/", 1)[-1]
    out = []
    for line in text.splitlines():
        words = line.split("#")[0].split()
        at = [k for k, w in enumerate(words) if w == name or w.endswith("/" + name)]
        if not at or "<" in line:
            continue
        line = re.sub(r"\[([^\]]*)\]", lambda m: m.group(1).split("|")[0], " ".join(words[at[0] + 1:]))
        out.append([w.split("|")[0] for w in shlex.split(line)])
    return out


@pytest.mark.parametrize("script", SCRIPTS)
def test_docstring_usage_examples_parse(script):
    module = runpy.run_path(str(REPO / script))
    examples = usage_examples(module["__doc__"] or "", script)
    assert examples, f"{script} gives no usage example in its docstring"
    parser = module["get_args_parser"]()
    for argv in examples:
        args = parser.parse_args(argv)
        if "check_args" in module:  # the script's own checks of flag combinations
            module["check_args"](args)


# one spelling per concept: the canonical flag first, the notebook's (or an older script's) as an alias
ALIASES = {
    "s1_data_gen/make_structure_dataset.py": [("--data", "--inputs")],
    "s1_data_gen/merge_shards.py": [("--data", "--inputs")],
    "s1_training/train_conv_pixel_stem_bb.py": [("--epochs", "--epoch"), ("--workers", "--cpu")],
    "s2_data_gen/s1_pred_stem_processing.py": [("--threshold_p", "--threshold"), ("--s1_model", "--model"),
                                               ("--out", "--out_file")],
    "s2_training/train_s2_box.py": [("--data", "--input_data"), ("--lr", "--learning_rate")],
    "s2_training/train_s2_grammar.py": [("--lr", "--learning_rate")],
    "evaluation/run_s1_inference.py": [("--threshold_p", "--threshold")],
    "evaluation/run_s2_ablation.py": [("--threshold_p", "--threshold")],
    "evaluation/run_end_to_end.py": [("--threshold_p", "--threshold")],
}


@pytest.mark.parametrize("script", sorted(ALIASES))
def test_each_concept_has_one_flag_and_its_aliases(script):
    parser = runpy.run_path(str(REPO / script))["get_args_parser"]()
    for canonical, alias in ALIASES[script]:
        action = parser._option_string_actions[canonical]
        assert parser._option_string_actions[alias] is action and action.option_strings[0] == canonical

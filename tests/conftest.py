import contextlib
import gzip
import io
import os
import runpy
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_MINIGENOME = REPO.parent / "shared" / "data" / "minigenome"


# fixtures that generate data and train models with the real scripts: a test that uses
# one is slow (``make test-fast`` leaves it out), whatever its own time
SLOW_FIXTURES = {"tiny_s1_data", "s2_models"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def run_script(script: str, *args, cwd: Path = REPO, check: bool = True) -> subprocess.CompletedProcess:
    """Run one of the project's scripts as a user would, from ``cwd``: in a new interpreter,
    or, with ``check=False`` (the error-path tests), in this one (``run_in_process``)."""
    if not check:
        return run_in_process(script, *args, cwd=cwd)
    proc = subprocess.run([sys.executable, str(REPO / script), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def run_in_process(script: str, *args, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """The script's ``__main__`` run in this process with its command line, working folder,
    stdout and stderr, and its exit status: what a user sees of a run that stops on bad
    input, without an interpreter start and the torch / numba / ViennaRNA imports per case
    (about 3 s each)."""
    from stembb.errors import RUN_LOGS
    argv, saved_argv, saved_cwd = [str(REPO / script), *map(str, args)], sys.argv, os.getcwd()
    saved_sigterm = signal.getsignal(signal.SIGTERM)  # run_main installs its own
    out, err, status = io.StringIO(), io.StringIO(), 0
    sys.argv = argv
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as exc:
        status = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1  # as the interpreter
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        signal.signal(signal.SIGTERM, saved_sigterm)
        for log in RUN_LOGS:  # closed and forgotten, as at a process exit
            for handler in log.handlers:
                handler.close()
        RUN_LOGS.clear()
    return subprocess.CompletedProcess(argv, status, out.getvalue(), err.getvalue())


def random_candidates(rng, min_length: int, max_length: int, min_span: int, density: float):
    """A random RNA sequence and a random subset (share ``density``) of its pairs (i, j)
    with j - i >= ``min_span``, for property tests of the structure decoders."""
    import numpy as np
    length = int(rng.integers(min_length, max_length))
    seq = "".join(rng.choice(list("ACGU"), length))
    i, j = np.triu_indices(length, min_span)
    keep = rng.random(len(i)) < density
    return seq, np.stack([i[keep], j[keep]], axis=1)


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The one-line error a script printed last on stderr."""
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") or "error:" in line, proc.stderr
    return line


@pytest.fixture
def tiny_genome(tmp_path):
    """A FASTA with one contig and a GTF with a plus gene, a minus gene and a gene in N.

    chrT: 300 bp; geneP + at 11..70, geneM - at 101..160, geneN + at 201..260 (all N).
    """
    import numpy as np
    rng = np.random.default_rng(7)
    seq = "".join(rng.choice(list("ACGT"), 300))
    seq = seq[:200] + "N" * 60 + seq[260:]
    fasta = tmp_path / "tiny.fa"
    fasta.write_text(">chrT\n" + "\n".join(seq[k:k + 50] for k in range(0, 300, 50)) + "\n")
    lines = [
        'chrT\ttest\tgene\t11\t70\t.\t+\t.\tgene_id "geneP"; gene_type "protein_coding";',
        'chrT\ttest\texon\t11\t70\t.\t+\t.\tgene_id "geneP"; transcript_id "tP";',
        'chrT\ttest\tgene\t101\t160\t.\t-\t.\tgene_id "geneM"; gene_type "lncRNA";',
        'chrT\ttest\tgene\t201\t260\t.\t+\t.\tgene_id "geneN"; gene_type "protein_coding";',
    ]
    gtf = tmp_path / "tiny.gtf.gz"
    with gzip.open(gtf, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    return fasta, gtf, seq


TINY_NET = ["--num_filters", "4", "4", "--filter_width", "3", "3", "--hid_shared", "4", "--hid_output", "4"]


@pytest.fixture(scope="session")
def tiny_s1_data(tmp_path_factory):
    """A small multi-struct training pickle made by the real generator (ViennaRNA, pyfaidx)."""
    out = tmp_path_factory.mktemp("s1data") / "train.pkl.gz"
    run_script("s1_data_gen/generate_human_transcriptome_segment_high_mfe_freq_multi_struct.py",
               "--len", 30, "--num_data", 40, "--num_sample", 3, "--chromosomes", "chr3", "--seed", 1, "--out", out)
    return out


def train_s1(data, result, *extra, check=True):
    """The S1 training script on ``data`` with the tiny network, on CPU, no loader workers."""
    return run_script("s1_training/train_conv_pixel_stem_bb.py", "--data", data, "--result", result, *TINY_NET,
                      "--lr", "0.01", "--batch_size", "8", "--cpu", "0", "--device", "cpu", "--no_progress",
                      *extra, check=check)


@pytest.fixture(scope="session")
def s2_models(tiny_s1_data, tmp_path_factory):
    """S1 -> S2 data -> both S2 networks, with the real scripts on tiny data."""
    root = tmp_path_factory.mktemp("s2")
    train_s1(tiny_s1_data, root / "s1", "--epoch", 2)
    s1 = root / "s1" / "model_ckpt_ep_1.pth"
    s2_data = root / "s2.pkl.gz"
    run_script("s2_data_gen/s1_pred_stem_processing.py", "--data", tiny_s1_data, "--threshold_p", 0.05, "--model", s1,
               "--out_file", s2_data, "--features", "--include_all")
    common = ["--input_data", s2_data, "--training_proportion", 0.7, "--learning_rate", 0.01, "--epochs", 2,
              "--batch_size", 8, "--save_every", 1, "--no_progress"]
    run_script("s2_training/train_s2_box.py", *common, "--model", "gnn", "--hid", 8, 8, "--kmer", 2,
               "--embed_dim", 4, "--log", root / "result" / "gnn.log")
    run_script("s2_training/train_s2_box.py", *common, "--dim", 16, "--layers", 1, "--heads", 2, "--terms_epochs", 3,
               "--log", root / "result" / "box.log")
    return root, s1, root / "result" / "box.model_ckpt_ep_1.pth", root / "result" / "gnn.model_ckpt_ep_1.pth"

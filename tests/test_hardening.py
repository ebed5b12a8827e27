"""Bad input, faults and shared use: one-line errors, no lost or half-written files."""
import gzip
import os
import re
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from conftest import REPO, error_line, run_script, train_s1
from stembb.checkpoint import run_ids
from stembb.errors import InputError


def test_output_equal_to_an_input_is_refused_and_the_input_kept(tiny_s1_data, s2_models, tmp_path):
    _, s1, box, _ = s2_models
    copy = tmp_path / "data.pkl.gz"
    copy.write_bytes(tiny_s1_data.read_bytes())
    before = copy.read_bytes()
    for script, args in (("evaluation/run_s1_inference.py", ["--data", copy, "--models", s1, "--out", copy]),
                         ("evaluation/run_end_to_end.py", ["--data", copy, "--s1_model", s1, "--s2_model", box,
                                                           "--out", copy]),
                         ("s2_data_gen/s1_pred_stem_processing.py", ["--data", copy, "--model", s1, "--threshold_p",
                                                                     0.1, "--out_file", copy])):
        assert "output path is also an input" in error_line(run_script(script, *args, check=False))
        assert copy.read_bytes() == before
    proc = run_script("evaluation/run_end_to_end.py", "--data", copy, "--s1_model", s1, "--s2_model", box,
                      "--out", tmp_path, check=False)
    assert "existing folder" in error_line(proc)
    for num in (0, -5):
        proc = run_script("evaluation/run_end_to_end.py", "--data", copy, "--s1_model", s1, "--s2_model", box,
                          "--out", tmp_path / "x.csv", "--num", num, check=False)
        assert f"--num must be at least 1, got {num}" in error_line(proc)


def test_run_ids_of_same_named_runs_differ(tmp_path):
    a, b = tmp_path / "A" / "run" / "model_ckpt_ep_1.pth", tmp_path / "B" / "run" / "model_ckpt_ep_1.pth"
    assert run_ids([a, b]) == ["A/run", "B/run"]
    assert run_ids([a, tmp_path / "A" / "other" / "model_ckpt_ep_1.pth"]) == ["run", "other"]


def test_sigterm_removes_the_partial_file_and_outputs_honour_the_umask(tmp_path):
    code = ("import os, signal\n"
            "from stembb.errors import run_main\nfrom stembb.io import atomic_path\n"
            "def main():\n"
            f"    with atomic_path({str(tmp_path / 'out.bin')!r}) as tmp:\n"
            "        tmp.write_bytes(b'half')\n"
            "        os.kill(os.getpid(), signal.SIGTERM)\n"
            "run_main(main)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 143 and "interrupted" in proc.stderr  # 128 + SIGTERM, as schedulers read it
    assert os.listdir(tmp_path) == []
    code = ("import os, pandas as pd\nos.umask(0o022)\nfrom stembb.io import write_csv\n"
            f"write_csv(pd.DataFrame({{'a': [1]}}), {str(tmp_path / 'x.csv')!r})\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert (tmp_path / "x.csv").stat().st_mode & 0o777 == 0o644  # lab-mates can read it


def test_failed_run_log_ends_with_the_error(tiny_s1_data, tmp_path):
    log = tmp_path / "s2.log"
    proc = run_script("s2_training/train_s2_box.py", "--input_data", tiny_s1_data, "--log", log, check=False)
    line = error_line(proc)
    assert "missing column" in line and log.read_text().strip().splitlines()[-1] == line
    for flags, message in ((["--learning_rate", "-1"], "--learning_rate must be a positive finite number"),
                           (["--dropout", "2"], "--dropout must be in [0, 1)"),
                           (["--model", "gnn", "--terms_epochs", "3"], "--model gnn has none"),
                           (["--seed", "-1"], "argument --seed: must be from 0 to 2**32 - 1, got -1"),
                           (["--seed", "x"], "argument --seed: 'x' is not a whole number")):
        proc = run_script("s2_training/train_s2_box.py", "--input_data", tiny_s1_data, "--log", log, *flags,
                          check=False)
        assert message in error_line(proc)


def test_s2_resume_takes_the_run_log_and_refuses_a_finished_run(s2_models, tmp_path):
    root, _, _, _ = s2_models
    data = root / "s2.pkl.gz"
    proc = run_script("s2_training/train_s2_box.py", "--input_data", data, "--training_proportion", 0.7,
                      "--learning_rate", 0.01, "--epochs", 2, "--batch_size", 8, "--save_every", 1, "--no_progress",
                      "--dim", 16, "--layers", 1, "--heads", 2, "--terms_epochs", 3, "--log", root / "result" / "box.log",
                      "--resume", root / "result" / "box.log", check=False)
    assert "box.model_ckpt_ep_1.pth: the run already has 2 epochs (--epochs 2)" in error_line(proc)
    proc = run_script("s2_training/train_s2_box.py", "--input_data", data, "--epochs", 1, "--no_progress",
                      "--log", root / "result" / "box.log", check=False)  # a new run over it
    line = error_line(proc)
    assert "already holds another run's checkpoints (box.model_ckpt_ep_0.pth, box.model_ckpt_ep_1.pth)" in line


def test_truncated_annotation_and_gzipped_fasta(tmp_path, s2_models):
    gtf = tmp_path / "genes.gtf.gz"
    gtf.write_bytes(gzip.compress(("chr3\tx\tgene\t1\t900\t.\t+\t.\tgene_id \"g\";\n" * 2000).encode())[:-40])
    proc = run_script("s1_data_gen/generate_human_transcriptome_segment_high_mfe_freq.py", "--len", 40,
                      "--num_seq", 5, "--chromosomes", "chr3", "--annotation", gtf, "--out", tmp_path / "o.pkl.gz",
                      check=False)
    assert "truncated or not a (gzipped) GTF" in error_line(proc)
    _, s1, box, _ = s2_models
    fasta = tmp_path / "in.fa.gz"
    fasta.write_bytes(gzip.compress(b"\xef\xbb\xbf>a\nGGGGAAACCCCAUGCGAAAGCAUG\n>a\nGGGAAACCCAAAA\n"))
    proc = run_script("evaluation/predict_structure.py", "--s1_model", s1, "--s2_model", box, "--fasta", fasta)
    assert proc.stdout.splitlines()[0] == ">a" and len(proc.stdout.splitlines()) == 6
    for text, message in ((b">a\nGGG\xa0AAACCC\n", "not UTF-8 text (line 2, byte 4"),
                          (">a\nGGG\u00a0AAACCC\n".encode(), "'\\xa0' (U+00A0)")):
        fasta.write_bytes(text)
        proc = run_script("evaluation/predict_structure.py", "--s1_model", s1, "--s2_model", box, "--fasta", fasta,
                          check=False)
        assert message in error_line(proc)


def test_duplicate_reference_names_and_long_references(tmp_path, s2_models):
    _, s1, box, _ = s2_models
    refs = tmp_path / "refs.fa"
    refs.write_text(">x\nGGGGAAAACCCC\n((((....))))\n>x\nGGGAAACCCAAA\n(((...)))...\n>long\n"
                    + "GGGGAAAACCCC" * 3 + "\n" + "((((....))))" * 3 + "\n")
    out = tmp_path / "e2e.csv"
    proc = run_script("evaluation/run_end_to_end.py", "--s1_model", s1, "--s2_model", box, "--refs", refs,
                      "--out", out, "--max_length", 20)
    assert "skipped 1 of 3 sequences longer than --max_length 20" in proc.stderr
    assert list(pd.read_csv(out)["name"]) == ["x", "x", "x", "x"] and (tmp_path / "e2e.png").exists()
    proc = run_script("evaluation/run_end_to_end.py", "--s1_model", s1, "--s2_model", box, "--refs", refs,
                      "--out", out, "--max_length", 20, "--strict_length", check=False)
    assert "longer than --max_length 20" in error_line(proc)


@pytest.mark.slow
def test_resume_of_a_finished_s1_run_says_so(tiny_s1_data, tmp_path):
    train_s1(tiny_s1_data, tmp_path / "r", "--epoch", 1)
    proc = train_s1(tiny_s1_data, tmp_path / "r", "--epoch", 1, "--resume", tmp_path / "r", check=False)
    assert "already has 1 epochs" in error_line(proc)


@pytest.mark.slow
def test_gpu_check_dry_run_passes_on_cpu(tmp_path):
    """scripts/gpu_check.sh --dry-run: the GPU check's every step, tiny, on CPU, with the
    same script a lent GPU machine runs (so it cannot rot between GPU loans)."""
    env = dict(os.environ, PY=sys.executable, WORK=str(tmp_path / "work"), OUT=str(tmp_path / "out"))
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--dry-run"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert re.search(r"tiny bf16: [0-9.]+ examples/s per process \| device: cpu", out), out
    assert "resuming from" in out and "torch.distributed backend: gloo" in out
    assert re.search(r"predicted \d+ structures in [0-9.]+ s", out) and "gpu check done" in out
    assert re.search(r"1000 nt, --max_span 300: predicted 1 structures in [0-9.]+ s", out), out
    assert (tmp_path / "out" / "s1_eval.csv").is_file() and (tmp_path / "out" / "s2_train.log").is_file()


def test_a_killed_folding_worker_stops_the_generator_with_one_line(tmp_path):
    out = tmp_path / "never.pkl.gz"
    script = REPO / "s1_data_gen" / "generate_human_transcriptome_segment_high_mfe_freq_multi_struct.py"
    proc = subprocess.Popen([sys.executable, str(script), "--len", "40", "--num_data", "200000", "--num_sample", "5",
                             "--workers", "2", "--out", str(out)],
                            cwd=script.parent, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + 120
        workers: list[str] = []
        while not workers and time.monotonic() < deadline:  # the pool starts its workers at the first batch
            time.sleep(0.5)
            workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert workers, "the generator started no worker process"
        os.kill(int(workers[0]), signal.SIGKILL)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 1, stderr[-2000:]
    assert stderr.strip().splitlines()[-1].startswith("error: a folding worker process died")
    assert not out.exists()


POOL_WITH_A_STUCK_WORKER = """
import multiprocessing, os, signal, time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from stembb.errors import RunFailed, pool_worker_start, run_main

LOCK = multiprocessing.get_context("fork").Lock()


def task(k):
    if k == 0:  # dies holding a lock, as a worker killed while it writes to the pool's result queue
        LOCK.acquire()
        time.sleep(1)
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.5)
    try:
        LOCK.acquire()
    except BaseException:  # the pool's worker reports a failed task, which needs the lock again
        LOCK.acquire()


def main():
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork"), initializer=pool_worker_start) as pool:
        try:
            list(pool.map(task, [0, 1]))
        except BrokenProcessPool:
            raise RunFailed("a folding worker process died") from None


run_main(main)
"""


def test_a_worker_stuck_behind_a_killed_one_is_stopped_at_once(tmp_path):
    """Item 8 of the hardening issue, without depending on machine load: when a worker
    dies, the pool stops the others with SIGTERM; one blocked on a lock the dead worker
    held used to take the signal as its task's exception and block again, and the run
    hung. ``pool_worker_start`` (the generators' pool initializer) makes SIGTERM end it."""
    script = tmp_path / "pool.py"
    script.write_text(POOL_WITH_A_STUCK_WORKER)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(script)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1] == "error: a folding worker process died"
    assert time.monotonic() - started < 30


def test_infinite_gamma_is_refused_before_any_work(tmp_path):
    fasta = tmp_path / "in.fa"
    fasta.write_text(">a\nGGGGAAACCCC\n")
    proc = run_script("evaluation/predict_structure.py", "--fasta", fasta, "--gamma", "inf", check=False)
    assert "--gamma must be a positive finite number, got inf" in error_line(proc)


class _RunsCode:
    """Unpickles to a call of os.system: what a hostile data pickle does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


def test_a_data_pickle_that_would_run_code_is_refused_before_the_call(tmp_path):
    import pickle

    from stembb.io import read_pickle

    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pkl.gz"
    frame = pd.DataFrame({"seq": ["GGGGAAACCCC"], "one_idx": [([0], [10])], "payload": [_RunsCode(marker)]})
    with gzip.open(evil, "wb") as f:
        pickle.dump(frame, f)
    with pytest.raises(InputError, match=r"evil.pkl.gz: refused to unpickle (posix|os)\.system"):
        read_pickle(evil, required=("seq",))
    proc = run_script("evaluation/run_end_to_end.py", "--data", evil, "--out", tmp_path / "e2e.csv", check=False)
    assert "refused to unpickle" in error_line(proc) and not marker.exists()
    plain = tmp_path / "plain.pkl"
    frame.drop(columns="payload").to_pickle(plain)  # uncompressed, and what pandas itself writes, reads back
    pd.testing.assert_frame_equal(read_pickle(plain, required=("seq",)), frame.drop(columns="payload"))


@pytest.mark.slow
def test_outputs_through_links_fifos_devices_and_standard_output(tmp_path):
    import stat
    import threading

    fasta = tmp_path / "in.fa"
    fasta.write_text(">a\nGGGGAAACCCC\n")
    expected = run_script("evaluation/predict_structure.py", "--fasta", fasta).stdout
    assert run_script("evaluation/predict_structure.py", "--fasta", fasta, "--out", "-").stdout == expected

    target, link = tmp_path / "target.db", tmp_path / "link.db"
    target.write_text("old\n")
    link.symlink_to(target)
    run_script("evaluation/predict_structure.py", "--fasta", fasta, "--out", link)
    assert link.is_symlink() and target.read_text() == expected  # the link stays, its target is written

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()))
    reader.start()
    run_script("evaluation/predict_structure.py", "--fasta", fasta, "--out", fifo)
    reader.join(timeout=60)
    assert received == [expected] and stat.S_ISFIFO(fifo.stat().st_mode)

    device = tmp_path / "null"
    try:
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a copy of /dev/null
    except PermissionError:
        pytest.skip("this machine does not allow making a device node")
    run_script("evaluation/predict_structure.py", "--fasta", fasta, "--out", device)
    assert stat.S_ISCHR(device.stat().st_mode)  # still a device, not replaced by a regular file


@pytest.mark.slow
def test_a_new_run_refuses_a_folder_holding_another_runs_checkpoints(tiny_s1_data, tmp_path):
    run = tmp_path / "run_x"
    train_s1(tiny_s1_data, run, "--epoch", 1)
    before = sorted(p.name for p in run.glob("*.pth"))
    proc = train_s1(tiny_s1_data, run, "--epoch", 1, check=False)
    assert "already holds another run's checkpoints (model_ckpt_ep_0.pth)" in error_line(proc)
    assert sorted(p.name for p in run.glob("*.pth")) == before
    train_s1(tiny_s1_data, run, "--epoch", 2, "--resume", run)  # continuing it is fine
    assert sorted(p.name for p in run.glob("*.pth")) == ["model_ckpt_ep_0.pth", "model_ckpt_ep_1.pth"]


@pytest.mark.slow
def test_dask_addresses_that_are_not_a_scheduler_stop_with_one_line(tmp_path):
    import socket
    import threading

    script = "s1_data_gen/generate_human_transcriptome_segment_high_mfe_freq_multi_struct.py"
    common = ["--len", 40, "--num_data", 10, "--num_sample", 2, "--out", tmp_path / "never.pkl.gz"]
    proc = run_script(script, *common, "--dask", "foo", check=False)
    assert "--dask 'foo': expected a scheduler address" in error_line(proc)
    silent = socket.socket()  # a service that accepts and never answers, on this machine only
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    held = []
    threading.Thread(target=lambda: held.append(silent.accept()), daemon=True).start()
    started = time.monotonic()
    proc = run_script(script, *common, "--dask", f"tcp://127.0.0.1:{silent.getsockname()[1]}", check=False)
    assert "no Dask scheduler answered within 15 s" in error_line(proc) and time.monotonic() - started < 90
    silent.close()
    assert not (tmp_path / "never.pkl.gz").exists()


@pytest.mark.slow
def test_small_input_checks(tiny_s1_data, tmp_path):
    import pickle

    from stembb.io import read_pickle

    frame = pd.DataFrame({"seq": ["GGGGAAACCCC"], "one_idx": [([0], [10])],
                          "bounding_boxes": [[((0, 10), (1, 1), "stem"), ((5, 9), (4, 4), "stem")]]})
    bad = tmp_path / "box.pkl.gz"
    with gzip.open(bad, "wb") as f:
        pickle.dump(frame, f)
    with pytest.raises(InputError, match=r"row 0: bounding box \(\(5, 9\), \(4, 4\), 'stem'\) lies outside its 11-nt"):
        read_pickle(bad)
    fasta = tmp_path / "in.fa"
    fasta.write_text(">long\n" + "GGGGAAACCCCAUAU" * 14 + "\n")
    for device in ("meta", "mps"):
        proc = run_script("evaluation/predict_structure.py", "--fasta", fasta, "--device", device, check=False)
        assert f"--device {device}: stembb runs on cpu or cuda" in error_line(proc)
    proc = run_script("evaluation/predict_structure.py", "--fasta", fasta)
    assert "note: 1 of 1 sequences are longer than 200 nt" in proc.stderr
    for version in ("v1", "v2"):  # two datasets that differ after the first dot keep their own plots
        out = tmp_path / f"rfam.{version}.pkl.gz"
        run_script("s1_data_gen/make_structure_dataset.py", "--data", REPO / "tests" / "data" / "rfam_sample.sto",
                   "--out", out, "--val_families", 0.2, "--test_families", 0.2)
        assert (tmp_path / f"rfam.{version}_statistics.png").is_file()


def test_an_output_in_an_unwritable_folder_is_refused_before_any_work(tmp_path):
    fasta = tmp_path / "in.fa"
    fasta.write_text(">a\nGGGGAAACCCC\n")
    read_only = tmp_path / "ro"
    read_only.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(read_only)],
                      capture_output=True).returncode:
        pytest.skip("no read-only file system can be mounted here (mount needs root)")
    try:
        proc = run_script("evaluation/predict_structure.py", "--fasta", fasta, "--out", read_only / "sub" / "x.db",
                          check=False)
    finally:
        subprocess.run(["umount", str(read_only)], check=True)
    line = error_line(proc)
    assert "x.db: cannot write in" in line and "read-only file system" in line
    assert "predicted" not in proc.stderr  # refused before the prediction


def test_a_loader_worker_reports_errors_but_not_the_connection_its_main_process_dropped():
    """What multiprocessing's fd-sharing thread does in a loader worker when the main
    process ends mid-transfer (the rare traceback after an interrupted run's one line),
    and when anything else goes wrong there."""
    code = ("import sys; from stembb.errors import loader_worker_start; loader_worker_start(0)\n"
            "for exc in (ConnectionResetError(104, 'Connection reset by peer'), ValueError('a real fault')):\n"
            "    try:\n        raise exc\n    except Exception:\n        sys.excepthook(*sys.exc_info())\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert "ValueError: a real fault" in proc.stderr and "ConnectionResetError" not in proc.stderr


@pytest.mark.slow
def test_sigterm_to_a_training_run_and_its_loader_workers_prints_one_line(tiny_s1_data, tmp_path):
    script = REPO / "s1_training" / "train_conv_pixel_stem_bb.py"
    proc = subprocess.Popen([sys.executable, str(script), "--data", str(tiny_s1_data), "--result", str(tmp_path / "run"),
                             "--num_filters", "8", "--filter_width", "3", "--hid_shared", "8", "--hid_output", "4",
                             "--epochs", "1000", "--batch_size", "2", "--workers", "2", "--device", "cpu",
                             "--no_progress"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            start_new_session=True)  # its own process group, as a scheduler's job
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list((tmp_path / "run").glob("model_ckpt_ep_*.pth")):
            time.sleep(0.5)  # training (and its loader workers) under way
        os.killpg(proc.pid, signal.SIGTERM)  # the whole group, workers too
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143 and "Traceback" not in stderr, stderr[-2000:]
    assert stderr.strip().splitlines()[-1].startswith("interrupted:")


def test_api_types_and_one_check_for_predict_and_fold():
    import stembb
    for bad in (None, 123):
        with pytest.raises(TypeError, match="takes a sequence as a str"):
            stembb.fold(bad)
    predictor = stembb.load_predictor()
    for call in (predictor.predict, predictor.fold):
        with pytest.raises(TypeError, match=r"got one str \(wrap it: \[seq\]\)"):
            call("GGGGAAACCCC")
        with pytest.raises(TypeError, match="sequence 2 is a int"):
            call(["GGGGAAACCCC", 5])
        for seq, why in (("GGGG AAACCCC", r"characters that are not letters: ' ' \(U\+0020\)"),
                         ("GGGG1AACCCC", "'1'"),
                         ("", "empty sequence")):
            with pytest.raises(InputError, match=why):
                call(["GGGGAAACCCC", seq])
    assert predictor.predict(["GGGGAAACCCC"]) == predictor.fold(["GGGGAAACCCC"])[0]

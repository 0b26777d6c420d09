"""Faults and bad input in the data layer, the caches, the store, the aggregate and the OpenAI backend: each case
is a fault a user can cause (a copy, a ``touch``, a flipped byte, a kill -9, a binary file, a key echoed by a
server) and the behaviour promised for it (README, "Faults and bad input")."""

from __future__ import annotations

import base64
import gzip
import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import rdrec.backbones.shipped as shipped
import rdrec.data.candidates as cand
from rdrec.data.cache import build_cached, source_fingerprint
from rdrec.data.pipeline import prepare_dataset
from rdrec.data.sources.amazon_p5 import AmazonP5
from rdrec.data.sources.recbole_atomic import RecBoleDataset
from rdrec.data.split import SplitConfig
from rdrec.errors import DataError
from rdrec.teacher.store import RationaleStore
from rdrec.utils.atomic import atomic_dir
from rdrec.utils.report import write_metrics
from tests.test_aggregate import make_run
from tests.test_candidates import make_prepared

INTER = "".join(
    ["user_id:token\titem_id:token\trating:float\ttimestamp:float\n"]
    + [f"u{u}\ti{(u * 3 + t) % 11}\t{1 + t % 5}\t{1000 + 10 * t + u}\n" for u in range(8) for t in range(6)]
)


def write_recbole(root: Path, inter: str | bytes = INTER, name: str = "toy") -> RecBoleDataset:
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{name}.inter"
    path.write_bytes(inter if isinstance(inter, bytes) else inter.encode())
    return RecBoleDataset(str(root), name)


def quiet(_msg):
    pass


def staging_left(directory: Path) -> list[str]:
    """Hidden entries: every writer stages under a dot name beside its target."""
    return sorted(p.name for p in directory.rglob("*") if p.name.startswith(".") and p.name != ".hydra")


# ---- 1. fingerprints from content --------------------------------------------------------------------------------
def test_fingerprint_is_the_content_not_the_place_or_the_mtime(tmp_path):
    a, b = write_recbole(tmp_path / "one"), write_recbole(tmp_path / "two")
    fp = source_fingerprint(a, tmp_path / "cache")
    assert source_fingerprint(b, tmp_path / "cache") == fp  # same bytes fetched into another directory
    inter = b.path("inter")
    st = inter.stat()
    os.utime(inter, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # touch
    assert source_fingerprint(b, tmp_path / "cache") == fp and source_fingerprint(b) == fp
    data = bytearray(inter.read_bytes())
    data[-2] = ord("9") if data[-2] != ord("9") else ord("8")  # one byte (a timestamp digit), same size
    inter.write_bytes(bytes(data))
    os.utime(inter, ns=(st.st_atime_ns, st.st_mtime_ns))  # even with the old mtime back
    assert source_fingerprint(b, tmp_path / "cache") != fp
    # so the prepared split (and the candidate lists and store keys it names) is the same for the copy
    pa = prepare_dataset(a, SplitConfig(), tmp_path / "cache", log=quiet)
    pc = prepare_dataset(write_recbole(tmp_path / "three"), SplitConfig(), tmp_path / "cache2", log=quiet)
    assert pa.fingerprint == pc.fingerprint


def test_file_hashes_are_remembered_by_stat_and_not_recomputed(tmp_path, monkeypatch):
    import rdrec.data.cache as cache

    src = write_recbole(tmp_path / "one")
    calls = []
    real = cache.sha256_file
    monkeypatch.setattr(cache, "sha256_file", lambda p: calls.append(p) or real(p))
    first = source_fingerprint(src, tmp_path / "cache")
    assert source_fingerprint(src, tmp_path / "cache") == first and len(calls) == 1  # the memo answered
    os.utime(src.path("inter"))  # touched: hashed again, same answer
    assert source_fingerprint(src, tmp_path / "cache") == first and len(calls) == 2


# ---- 2. integrity -------------------------------------------------------------------------------------------------
def _arrow_file(entry: Path) -> Path:
    return max((p for p in entry.rglob("*.arrow")), key=lambda p: p.stat().st_size)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_prepared_cache_is_moved_aside_with_one_warning_and_rebuilt(tmp_path, caplog, damage):
    src = write_recbole(tmp_path / "raw")
    cache = tmp_path / "cache"
    first = prepare_dataset(src, SplitConfig(), cache, log=quiet)
    entry = cache / "toy" / f"prepared-{first.fingerprint[:16]}"
    arrow = _arrow_file(entry / "interactions")
    data = bytearray(arrow.read_bytes())
    if damage == "flip":
        for k in range(8):  # eight flipped bytes in the middle of the item column's buffers
            data[len(data) // 2 + k] ^= 0x01
    else:
        data = data[: len(data) // 2]
    arrow.write_bytes(bytes(data))
    caplog.set_level(logging.WARNING)
    again = prepare_dataset(src, SplitConfig(), cache, log=quiet)
    pd.testing.assert_frame_equal(again.interactions, first.interactions)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "corrupt" in warnings[0].getMessage() and "sha256" in warnings[0].getMessage()
    aside = [p.name for p in (cache / "toy").iterdir() if ".corrupt-" in p.name]
    assert len(aside) == 1 and aside[0].startswith(entry.name)
    caplog.clear()
    prepare_dataset(src, SplitConfig(), cache, log=quiet)  # the rebuilt entry verifies
    assert not caplog.records


def test_a_damaged_candidate_file_is_redrawn(tmp_path, caplog):
    prepared = make_prepared()
    lists = cand.load_or_create(tmp_path, "sampled", prepared, "test", 20, "uniform", 1)
    (path,) = (tmp_path / "candidates").iterdir()
    data = bytearray(path.read_bytes())
    # flip a byte inside the stored candidates array (np.savez does not compress: the raw values are in the file)
    needle = lists.candidates[3].astype(np.int64).tobytes()
    at = bytes(data).index(needle)
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
    caplog.set_level(logging.WARNING)
    again = cand.load_or_create(tmp_path, "sampled", prepared, "test", 20, "uniform", 1)
    assert np.array_equal(again.candidates, lists.candidates)
    assert len(caplog.records) == 1 and "corrupt" in caplog.records[0].getMessage()
    path.write_bytes(path.read_bytes()[:100])  # truncated: same
    assert np.array_equal(cand.load_or_create(tmp_path, "sampled", prepared, "test", 20, "uniform", 1).candidates,
                          lists.candidates)


def test_truncated_converted_weights_are_converted_again(tmp_path, monkeypatch):
    out = tmp_path / "models" / shipped.SMOLLM2_DIR
    with atomic_dir(out, seal=True) as tmp:  # what convert_gguf writes
        (tmp / "config.json").write_text("{}")
        (tmp / "model.safetensors").write_bytes(b"\x01" * 4096)
        (tmp / "SOURCE.json").write_text(json.dumps({"format": shipped.FORMAT}))
    monkeypatch.setattr(shipped, "smollm2_gguf", lambda d: (_ for _ in ()).throw(RuntimeError("would convert")))
    assert shipped.smollm2(tmp_path) == str(out)  # whole: reused
    with open(out / "model.safetensors", "r+b") as f:
        f.truncate(1000)
    with pytest.raises(RuntimeError, match="would convert"):
        shipped.smollm2(tmp_path)


def test_the_store_skips_an_undecodable_record_and_a_torn_last_line(tmp_path, caplog):
    store = RationaleStore(tmp_path / "s")
    seg = store.append([{"key": k, "text": f"rationale {k}"} for k in "abc"])
    lines = seg.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b"rationale b", b"rationale \xff")  # one non-UTF-8 byte in record 2
    seg.write_bytes(b"".join(lines) + b'{"key": "d", "te')  # and a torn last line
    caplog.set_level(logging.WARNING)
    again = RationaleStore(tmp_path / "s").reload()
    assert sorted(again.index) == ["a", "c"] and again.get("a")["text"] == "rationale a"
    assert again.corrupt == [f"{seg.name}:2", f"{seg.name}:4"]
    assert f"{seg.name}:2" in caplog.text and str(tmp_path / "s") in caplog.text


KILLED_BUILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {root!r})
    from rdrec.data.cache import build_cached
    from rdrec.utils.atomic import atomic_dir

    def save(obj, path):  # as the dataset caches save: an atomic_dir
        with atomic_dir(path) as tmp:
            (tmp / "part").write_text("half")
            print("saving", flush=True)
            time.sleep(60)  # killed here

    build_cached(Path({target!r}), lambda: "x", save, lambda p: "loaded")
""")


def _start_killable_build(target: Path) -> subprocess.Popen:
    code = KILLED_BUILD.format(root=str(Path(__file__).resolve().parents[1]), target=str(target))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "saving"
    return proc


def test_kill_9_during_a_cache_build_then_the_next_build_succeeds_and_leaves_no_staging(tmp_path):
    target = tmp_path / "cache" / "entry"
    proc = _start_killable_build(target)
    assert staging_left(tmp_path)  # the build is mid-way
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    def save(obj, path):
        with atomic_dir(path) as tmp:
            (tmp / "v").write_text(obj)

    assert build_cached(target, lambda: "fresh", save, lambda p: (p / "v").read_text()) == "fresh"
    assert (target / "v").read_text() == "fresh" and staging_left(tmp_path) == []


def test_a_live_writers_staging_is_left_alone(tmp_path):
    from rdrec.utils.atomic import atomic_write_text

    target = tmp_path / "cache" / "entry"
    proc = _start_killable_build(target)  # alive, mid-save
    try:
        live = staging_left(tmp_path)
        atomic_write_text(tmp_path / "cache" / "other.json", "{}")  # another writer into the same directory
        build_cached(tmp_path / "cache" / "second", lambda: "y", lambda o, p: p.mkdir(), lambda p: "y")
        assert live and set(live) <= set(staging_left(tmp_path))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


# ---- 3. one atomic file writer --------------------------------------------------------------------------------------
def test_atomic_file_leaves_the_old_file_on_error_and_removes_dead_writers_staging(tmp_path):
    from rdrec.utils.atomic import atomic_file, staging_path

    path = tmp_path / "metrics.json"
    write_metrics(path, {"test/hr@10": 0.5})
    with pytest.raises(RuntimeError):
        with atomic_file(path) as f:
            f.write('{"test/hr@10": 0.')
            raise RuntimeError("killed mid-write")
    assert json.loads(path.read_text()) == {"test/hr@10": 0.5} and staging_left(tmp_path) == []
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = Path(str(staging_path(path)).replace(f".staging.{os.getpid()}.", f".staging.{int(dead.stdout)}."))
    orphan.write_text("{")  # what a kill -9 during a write leaves
    write_metrics(path, {"test/hr@10": 0.25})
    assert json.loads(path.read_text()) == {"test/hr@10": 0.25} and staging_left(tmp_path) == []
    assert oct(path.stat().st_mode & 0o777) != "0o600"


def test_an_archive_is_written_whole_and_restoring_keeps_what_is_newer(tmp_path):
    """What carries a long study between machines (experiments/*/run.py --archive / restore)."""
    import tarfile

    from rdrec.utils.atomic import atomic_tar, extract_missing

    runs = tmp_path / "runs"
    (runs / "seed1" / "checkpoints").mkdir(parents=True)
    (runs / "seed1" / "checkpoints" / "last.ckpt").write_bytes(b"step 10")
    (runs / "seed1" / "metrics.json").write_text("{}")
    archive = tmp_path / "results" / "runs.tar.gz"
    with pytest.raises(FileNotFoundError):  # a file vanishing mid-way leaves no archive at all
        atomic_tar(archive, runs, [runs / "seed1" / "metrics.json", runs / "gone.json"])
    assert not archive.exists() and staging_left(tmp_path / "results") == []
    atomic_tar(archive, runs, sorted(p for p in runs.rglob("*") if p.is_file()), {"seed1/made.json": b"[1]"})
    again = atomic_tar(tmp_path / "again" / "runs.tar.gz", runs, sorted(p for p in runs.rglob("*") if p.is_file()),
                       {"seed1/made.json": b"[1]"})
    assert again.read_bytes() == archive.read_bytes()  # unchanged runs re-packed: the same bytes, nothing new in git
    fresh = tmp_path / "fresh"
    (fresh / "seed1" / "checkpoints").mkdir(parents=True)
    (fresh / "seed1" / "checkpoints" / "last.ckpt").write_bytes(b"step 12")  # trained on since the archive
    assert sorted(extract_missing(archive, fresh)) == ["seed1/made.json", "seed1/metrics.json"]
    assert (fresh / "seed1" / "made.json").read_text() == "[1]"
    assert (fresh / "seed1" / "checkpoints" / "last.ckpt").read_bytes() == b"step 12"
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        tar.add(runs / "seed1" / "metrics.json", arcname="../outside.json")
    with pytest.raises(tarfile.TarError):
        extract_missing(evil, fresh)
    assert not (tmp_path / "outside.json").exists()


def test_an_archive_stores_equal_members_once_and_restores_each_as_its_own_file(tmp_path):
    """A run's last.ckpt and the epoch checkpoint written at the same moment: stored once (a hard link in the
    tar), unpacked as two files with the archived bytes, even where the linked name is newer on disk."""
    import tarfile

    from rdrec.utils.atomic import atomic_tar, extract_missing

    runs = tmp_path / "runs"
    (runs / "checkpoints").mkdir(parents=True)
    weights = bytes(range(256)) * 4000
    (runs / "checkpoints" / "epoch000.ckpt").write_bytes(weights)
    archive = atomic_tar(tmp_path / "a.tar.gz", runs, [runs / "checkpoints" / "epoch000.ckpt"],
                         {"checkpoints/last.ckpt": weights, "metrics.csv": b"step"})
    with tarfile.open(archive) as tar:
        assert [(m.name, m.islnk()) for m in tar.getmembers()] == [
            ("checkpoints/epoch000.ckpt", False), ("checkpoints/last.ckpt", True), ("metrics.csv", False)]
    assert archive.stat().st_size < len(weights) * 1.5  # the weights once, not twice
    fresh = tmp_path / "fresh"
    assert sorted(extract_missing(archive, fresh)) == ["checkpoints/epoch000.ckpt", "checkpoints/last.ckpt",
                                                      "metrics.csv"]
    assert (fresh / "checkpoints" / "last.ckpt").read_bytes() == weights
    assert (fresh / "checkpoints" / "last.ckpt").stat().st_nlink == 1
    newer = tmp_path / "newer"
    (newer / "checkpoints").mkdir(parents=True)
    (newer / "checkpoints" / "epoch000.ckpt").write_bytes(b"trained on since")
    assert sorted(extract_missing(archive, newer)) == ["checkpoints/last.ckpt", "metrics.csv"]
    assert (newer / "checkpoints" / "last.ckpt").read_bytes() == weights


WRITE = re.compile(r"\.write_text\(|\.write_bytes\(|\bopen\([^)]*[\"']w|\.to_csv\(|\.to_parquet\(|savefig\(|"
                   r"torch\.save\(|np\.savez?\(|save_to_disk\(|save_pretrained\(")
# a write is fine where its target lies in a staging dir (atomic_dir: `tmp`, `stage`) or is a file object that
# atomic_file opened (`f`, `dst`, `buffer`); the writers themselves and their manifest are the exceptions
STAGED = re.compile(r"\(?(tmp|stage) /|\(str\((tmp|stage)\b|\bdest\b|\(f\b|, f\)|\(f,|\bbuffer\b|\bdst\b|tmp / f\"|"
                    r"^\s*return frame\.to_csv\(index=False\)")
WRITERS = {"rdrec/utils/atomic.py", "rdrec/utils/integrity.py"}
STAGED_HELPERS = {"rdrec/data/export.py": "frame.to_csv(path, sep="}  # _recbole_file: called with `tmp / …` only


def test_no_module_writes_a_file_in_place():
    """Every file the project writes goes through rdrec.utils.atomic (a file, or a staging dir renamed whole)."""
    root = Path(__file__).resolve().parents[1]
    bad = []
    for path in sorted((root / "rdrec").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel in WRITERS:
            continue
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            code = line.split("#")[0]
            if WRITE.search(code) and not STAGED.search(code) and STAGED_HELPERS.get(rel, "\0") not in code:
                bad.append(f"{rel}:{n}: {line.strip()}")
    assert bad == []


# ---- 4. bad input: one line naming file, line, field and what was expected ----------------------------------------
def test_an_inter_file_without_timestamps_is_refused_unless_file_order_is_declared(tmp_path):
    no_time = "user_id:token\titem_id:token\n" + "".join(f"u{u}\ti{t}\n" for u in range(3) for t in range(4))
    src = write_recbole(tmp_path, no_time)
    with pytest.raises(DataError) as err:
        src.load()
    msg = str(err.value)
    assert "\n" not in msg and f"{src.path('inter')}:1" in msg and "field 'timestamp'" in msg and "file_order" in msg
    ds = RecBoleDataset(str(tmp_path), "toy", file_order=True).load()
    assert ds.interactions["timestamp"].tolist()[:4] == [0.0, 1.0, 2.0, 3.0]
    assert source_fingerprint(RecBoleDataset(str(tmp_path), "toy", file_order=True)) != source_fingerprint(src)


def test_a_binary_inter_file_is_one_line(tmp_path):
    src = write_recbole(tmp_path, gzip.compress(INTER.encode()))
    with pytest.raises(DataError) as err:
        src.load()
    msg = str(err.value)
    assert "\n" not in msg and f"{src.path('inter')}:1" in msg and "UTF-8" in msg and "0x8b" in msg


def test_a_superscript_digit_in_a_p5_sequence_file_is_one_line(tmp_path):
    d = tmp_path / "beauty"
    d.mkdir()
    (d / "sequential_data.txt").write_text("1 2 3 4\n2 3 4\u00b2 5\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        AmazonP5(str(tmp_path), "beauty").load()
    msg = str(err.value)
    assert "sequential_data.txt:2" in msg and "field 'item 2'" in msg and "integer index" in msg and "4²" in msg


@pytest.mark.parametrize("content, expected", [
    ("[0.1, 0.2]", "expected a JSON object of metric name -> number, got 'list'"),
    ('{"test/hr@10": "high"}', "field 'test/hr@10': expected a number, got 'high'"),
    ("{}", "expected at least one metric"),
])
def test_aggregate_refuses_a_bad_metrics_json_and_writes_nothing(tmp_path, content, expected):
    from rdrec.cli.aggregate import main as cli

    make_run(tmp_path / "m", "0", ["seed=1"], {"test/hr@10": 0.5})
    bad = make_run(tmp_path / "m", "1", ["seed=2"], {})
    (bad / "metrics.json").write_text(content)
    with pytest.raises(SystemExit) as err:
        cli([str(tmp_path / "m")])
    msg = str(err.value.code)
    assert "\n" not in msg and str(bad / "metrics.json") in msg and expected in msg
    assert not (tmp_path / "m" / "aggregate").exists() and staging_left(tmp_path) == []


# ---- 5. secrets -----------------------------------------------------------------------------------------------------
KEY = "sk-faults-0123456789-do-not-log"
URL_KEY = "urlsecret-9876543210"


class KeyEchoServer:
    """An OpenAI-compatible server that refuses every request with a 401 whose body echoes the credentials."""

    def __init__(self):
        from tests.test_teacher_openai import QuietHandler, _Server

        seen = self.auth = []

        class Handler(QuietHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                auth = self.headers.get("Authorization", "")
                seen.append(auth)
                decoded = base64.b64decode(auth[6:]).decode() if auth.startswith("Basic ") else ""
                out = json.dumps({"error": {"message": f"invalid credentials {auth!r} ({decoded}) for {self.path}"}}).encode()
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = _Server(Handler)

    def __enter__(self):
        self.server.__enter__()
        return self

    def __exit__(self, *exc):
        self.server.__exit__(*exc)


def test_keys_echoed_by_a_server_never_reach_logs_store_exports_or_ids(tmp_path, monkeypatch, caplog, capsys):
    import pytorch_lightning as pl

    from rdrec.teacher.backends.base import GenerationParams
    from rdrec.teacher.backends.openai import OpenAIBackend
    from rdrec.teacher.generator import RetryPolicy
    from rdrec.teacher.prompts import Subset
    from rdrec.teacher.runner import run_generation
    from tests.test_teacher_fixtures import families, synthetic_prepared

    monkeypatch.setenv("RDREC_FAULTS_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    prepared = synthetic_prepared(tmp_path / "data", num_users=12)
    with KeyEchoServer() as server:
        host = server.server.url.removeprefix("http://")
        for name, base_url in (("bearer", f"http://{host}/v1"), ("url", f"http://user:{URL_KEY}@{host}/v1")):
            backend = OpenAIBackend(base_url, "echo", api_key_env="RDREC_FAULTS_KEY", max_retries=0)
            assert URL_KEY not in backend.model_id and URL_KEY not in repr(backend) and URL_KEY not in str(backend.describe())
            run_generation(
                prepared=prepared, families=families(), backend=backend,
                params=GenerationParams(max_new_tokens=8, do_sample=False), retry=RetryPolicy(max_retries=0),
                subset=Subset(users=2, interactions_per_user=1), seed=3, batch_size=4,
                store_dir=str(tmp_path / name / "store"), output_dir=str(tmp_path / name / "run"),
                make_trainer=lambda callbacks: pl.Trainer(accelerator="cpu", devices=1, logger=False,
                                                          enable_progress_bar=False, enable_checkpointing=False,
                                                          callbacks=callbacks))
    basic = base64.b64encode(f"user:{URL_KEY}".encode()).decode()
    assert f"Bearer {KEY}" in server.auth and f"Basic {basic}" in server.auth  # the credentials were sent
    assert "HTTP 401" in caplog.text and "***" in caplog.text  # the body was logged, redacted
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "metrics.json" for p in written)
    printed = "".join(capsys.readouterr())
    assert "echo@127.0.0.1" in printed  # the run announced its model id, without credentials
    for secret in (KEY, URL_KEY, basic):
        assert secret not in caplog.text and secret not in printed
        for path in written:
            assert secret.encode() not in path.read_bytes(), path

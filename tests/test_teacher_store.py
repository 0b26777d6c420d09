"""The rationale store: atomic segments, one entry per key, checksums, kill -9 safety, export."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from rdrec.errors import DataError
from rdrec.teacher.export import export, load
from rdrec.teacher.store import RationaleStore, make_key, record_checksum


def rec(key: str, family="rdrec", status="ok", user=1, item=2, **extra) -> dict:
    output = ({"user_preference": f"pref {key}", "item_attribute": f"attr {key}"} if family == "rdrec" else
              {"preferences": "p", "categories": "c", "items": "i", "rationale": "1. p\n2. c\n3. i"})
    return {"key": key, "family": family, "kind": "interaction" if family == "rdrec" else "user",
            "entity": {"user": user, "item": item} if family == "rdrec" else {"user": user},
            "status": status, "output": output if status == "ok" else None, "text": "raw", "attempts": 1,
            "rejected": [] if status == "ok" else [{"text": "raw", "error": "no '1.'"}],
            "extra": {"position": item} if family == "rdrec" else {"student_prompt": f"history of {user}"},
            "provenance": {"model_id": "m", "template_hash": "t", "created_at": "now"}, **extra}


def test_append_reload_skip_existing_and_checksums(tmp_path):
    store = RationaleStore(tmp_path / "s")
    assert store.append([rec("a"), rec("b"), rec("a")]) is not None
    assert store.append([rec("a"), rec("b")]) is None  # nothing new: no segment
    again = RationaleStore(tmp_path / "s")
    assert sorted(again.index) == ["a", "b"] and len(again.segment_files()) == 1
    r = again.get("a")
    assert r["checksum"] == record_checksum(r) and r["output"]["user_preference"] == "pref a"


def test_corrupt_record_is_ignored_and_regenerated_not_used(tmp_path):
    store = RationaleStore(tmp_path / "s")
    seg = store.append([rec("a"), rec("b")])
    lines = seg.read_text().splitlines()
    lines[0] = lines[0].replace("pref a", "pref X")  # bit rot: content no longer matches its checksum
    seg.write_text("\n".join(lines) + "\n")
    again = RationaleStore(tmp_path / "s").reload()
    assert "a" not in again and "b" in again and again.corrupt == [f"{seg.name}:1"]


def test_duplicates_resolve_to_the_first_commit_and_compaction_removes_them(tmp_path):
    s1, s2 = RationaleStore(tmp_path / "s", rank=0), RationaleStore(tmp_path / "s", rank=1)
    assert len(s2.index) == 0  # s2 loaded its index before s1 committed: it cannot know about "a"
    s1.append([rec("a"), rec("b")])
    time.sleep(0.01)
    s2.append([rec("a", text="other"), rec("c")])  # a second writer that raced on key "a"
    store = RationaleStore(tmp_path / "s").reload()
    assert sorted(store.index) == ["a", "b", "c"] and store.duplicates == 1
    assert store.get("a")["text"] == "raw"
    store.compact()
    assert len(store.segment_files()) == 1 and store.duplicates == 0
    lines = store.segment_files()[0].read_text().splitlines()
    assert sorted(json.loads(x)["key"] for x in lines) == ["a", "b", "c"]


def test_leftover_temp_files_are_never_read_and_dead_writers_temps_are_removed(tmp_path):
    store = RationaleStore(tmp_path / "s")
    store.append([rec("a")])
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    import socket
    tmp = store.segments_dir / f".tmp_{pid}_deadbeef_{socket.gethostname()}"
    tmp.write_text('{"key": "half"')  # a torn write of a killed writer
    again = RationaleStore(tmp_path / "s").reload()
    assert list(again.index) == ["a"] and not tmp.exists()


def test_other_format_version_is_a_clear_error(tmp_path):
    RationaleStore(tmp_path / "s")
    (tmp_path / "s" / "STORE.json").write_text('{"format_version": 99}')
    with pytest.raises(DataError, match="format_version"):
        RationaleStore(tmp_path / "s")


def test_keys_depend_on_every_part():
    base = dict(dataset="d", fingerprint="f", family="rdrec", kind="interaction", entity={"user": 1, "item": 2},
                template="t", model="m", params={"max_new_tokens": 8}, retry={"max_retries": 2}, seed=1)
    keys = {make_key(**base)}
    for field, value in [("entity", {"user": 1, "item": 3}), ("template", "t2"), ("model", "m2"),
                         ("params", {"max_new_tokens": 9}), ("seed", 2), ("fingerprint", "g")]:
        keys.add(make_key(**{**base, field: value}))
    assert len(keys) == 7 and make_key(**base) == make_key(**dict(reversed(list(base.items()))))


@pytest.mark.slow
def test_kill_9_while_appending_loses_at_most_the_batch_in_flight(tmp_path):
    # a writer appending batches of 50 big records as fast as it can, killed at a random moment, many times
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(os.getcwd())!r})
        from rdrec.teacher.store import RationaleStore
        from tests.test_teacher_store import rec
        store = RationaleStore({str(tmp_path / 's')!r})
        start = int(sys.argv[1])
        for b in range(start, start + 10_000):
            store.append([rec(f"k{{b}}-{{i}}", text="x" * 2000) for i in range(50)])
            print(b, flush=True)
    """)
    committed_before = 0
    for round_ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", code, str(round_ * 100_000)], stdout=subprocess.PIPE, text=True)
        for _ in range(3 + round_):
            proc.stdout.readline()  # let it commit a few batches, then kill it mid-write
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        store = RationaleStore(tmp_path / "s").reload()
        assert not store.corrupt and store.duplicates == 0
        assert len(store) % 50 == 0 and len(store) >= committed_before + 50 * (3 + round_)  # whole batches only
        committed_before = len(store)
    keys = [json.loads(line)["key"] for seg in store.segment_files() for line in seg.read_text().splitlines()]
    assert len(keys) == len(set(keys))


def test_export_tables_aggregate_training_rationales_and_list_failures(tmp_path):
    records = [rec("a", user=1, item=5), rec("b", user=1, item=3), rec("c", user=2, item=5),
               rec("d", status="failed", user=3, item=7), rec("e", family="slim", user=1)]
    counts = export(records, tmp_path / "out", meta={"model": "m"})
    assert counts == {"rdrec_interactions": 3, "rdrec_users": 2, "rdrec_items": 2, "rdrec_item_rationales": 0,
                      "rdrec_user_rationales": 0, "slim_users": 1, "failures": 1}
    dd = load(tmp_path / "out")
    users = dd["rdrec_users"].to_pandas().set_index("user")
    assert list(users.loc[1, "preferences"]) == ["pref b", "pref a"]  # in training order (position 3, then 5)
    items = dd["rdrec_items"].to_pandas().set_index("item")
    assert list(items.loc[5, "attributes"]) == ["attr a", "attr c"] and list(items.loc[5, "users"]) == [1, 2]
    assert dd["failures"][0]["key"] == "d" and dd["failures"][0]["error"] == "no '1.'"
    assert dd["slim_users"][0]["student_prompt"] == "history of 1"
    assert "d" not in set(dd["rdrec_interactions"]["key"])  # a failure is never a rationale
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["rows"]["failures"] == 1


def test_sigterm_stops_generation_after_storing_the_batch_in_flight(tmp_path):
    from types import SimpleNamespace

    from rdrec.teacher.callbacks import StoreWriter

    writer = StoreWriter(str(tmp_path / "s"))
    trainer = SimpleNamespace(global_rank=0, received_sigterm=False)
    writer.setup(trainer, None, "predict")
    stats = {"ok": 1, "failed": 0, "transport_errors": 0, "completion_tokens": 3, "prompt_tokens": 5, "generations": 1,
             "seconds": 0.1}
    writer.write_on_batch_end(trainer, None, {"records": [rec("a")], "stats": stats}, None, None, 0)
    trainer.received_sigterm = True  # what Lightning's signal handler sets on `kill`
    with pytest.raises(SystemExit, match="SIGTERM received; stopped after storing batch 1"):
        writer.write_on_batch_end(trainer, None, {"records": [rec("b")], "stats": stats}, None, None, 1)
    assert sorted(RationaleStore(tmp_path / "s").reload().index) == ["a", "b"]  # the batch in flight was kept

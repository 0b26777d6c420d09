"""The openai backend over real HTTP on loopback: a fault-injecting proxy (500, 429, answers delayed past the
client timeout, dropped connections) in front of (a) a small OpenAI-compatible test server and (b), when
llama-cpp-python[server] is installed, a real llama.cpp server with the shipped GGUF, including a server
killed and restarted mid-run. Nothing is mocked inside the client."""

from __future__ import annotations

import http.client
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import pytorch_lightning as pl

from rdrec.teacher.backends.base import GenerationParams
from rdrec.teacher.backends.openai import OpenAIBackend
from rdrec.teacher.generator import RetryPolicy
from rdrec.teacher.prompts import Subset
from rdrec.teacher.runner import run_generation
from rdrec.teacher.store import RationaleStore
from tests.test_teacher_fixtures import families, llama_server, synthetic_prepared

SECRET = "sk-test-0123456789abcdef-never-log-me"


# ---- servers on loopback -----------------------------------------------------------------------------------
class _Server:
    def __init__(self, handler):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that keeps the test output clean (no access log)."""

    def log_message(self, *a):
        pass


def send_json(handler: BaseHTTPRequestHandler, payload: dict, status: int = 200) -> None:
    out = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(out)))
    handler.end_headers()
    handler.wfile.write(out)


class EchoOpenAI(_Server):
    """A small OpenAI-compatible chat server: a deterministic RDRec/SLIM-style answer from (messages, seed)."""

    def __init__(self):
        seen = self.requests = []

        class Handler(QuietHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/chat/completions":
                    self.send_error(404)
                    return
                seen.append({"auth": self.headers.get("Authorization"), "body": body})
                words = [m for m in body["messages"] if m["role"] == "user"][-1]["content"].split()
                text = (f"1. The user prefers {words[-1]} things (seed {body['seed']}).\n"
                        f"2. The item's attributes are {words[0]} and more.\n3. Recommend {words[1]} items to the user.")
                last = body["messages"][-1]
                if body.get("continue_final_message") and last["role"] == "assistant":  # as vLLM serve does
                    assert text.startswith(last["content"])
                    text = text[len(last["content"]):]
                send_json(self, {"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                                 "usage": {"prompt_tokens": len(words), "completion_tokens": 17}})

        super().__init__(Handler)


class FaultProxy(_Server):
    """Forwards POSTs to ``upstream``; request n gets ``script[n]``: "ok", "500", "429", "drop" (close without an
    answer), "slow:<s>" (answer only after s seconds, past the client's timeout). Records what it saw."""

    def __init__(self, upstream: str, script: list[str]):
        self.script, self.log, lock = list(script), [], threading.Lock()
        host, port = upstream.replace("http://", "").split(":")
        proxy = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with lock:
                    n = len(proxy.log)
                    action = proxy.script[n] if n < len(proxy.script) else "ok"
                    proxy.log.append({"action": action, "auth": self.headers.get("Authorization")})
                if action == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if action in ("500", "429"):
                    msg = b'{"error": {"message": "injected fault"}}'
                    self.send_response(int(action))
                    if action == "429":
                        self.send_header("Retry-After", "0")
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(msg)))
                    self.end_headers()
                    self.wfile.write(msg)
                    return
                if action.startswith("slow:"):
                    time.sleep(float(action.split(":")[1]))
                conn = http.client.HTTPConnection(host, int(port), timeout=600)
                try:
                    headers = {"Content-Type": "application/json"}
                    if self.headers.get("Authorization"):
                        headers["Authorization"] = self.headers["Authorization"]
                    conn.request("POST", self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    status = resp.status
                except (ConnectionError, OSError):
                    data, status = b'{"error": {"message": "upstream unreachable"}}', 502
                finally:
                    conn.close()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout) before we answered

        super().__init__(Handler)

    def actions(self) -> list[str]:
        return [e["action"] for e in self.log]


# ---- helpers -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return synthetic_prepared(tmp_path_factory.mktemp("o"), with_reviews=True, num_users=20)


def _trainer(callbacks):
    return pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                      enable_checkpointing=False, callbacks=callbacks)


def _generate(prepared, tmp_path, backend, store, users=3, max_new_tokens=32, batch_size=8):
    return run_generation(
        prepared=prepared, families=families(), backend=backend,
        params=GenerationParams(max_new_tokens=max_new_tokens, do_sample=False),
        retry=RetryPolicy(max_retries=1), subset=Subset(users=users, interactions_per_user=1), seed=3,
        batch_size=batch_size, store_dir=str(tmp_path / store), make_trainer=_trainer,
        output_dir=str(tmp_path / f"run-{store}"))


def _texts(path: Path) -> dict:
    texts = {r["key"]: r["text"] for r in RationaleStore(path, create=False).reload().records()}
    assert texts, f"empty store {path}"
    return texts


# ---- against the small test server (always run) ----------------------------------------------------------------
def test_faults_are_retried_with_backoff_and_the_result_is_unchanged(prepared, tmp_path, monkeypatch):
    monkeypatch.setenv("RDREC_TEST_KEY", SECRET)
    with EchoOpenAI() as upstream:
        direct = OpenAIBackend(f"{upstream.url}/v1", "echo", model_id="echo", api_key_env="RDREC_TEST_KEY",
                               concurrency=4, timeout=5)
        _generate(prepared, tmp_path, direct, "direct")
        script = ["500", "429", "slow:1.5", "drop", "ok", "503", "ok", "ok", "500"]
        with FaultProxy(upstream.url, script) as proxy:
            backend = OpenAIBackend(f"{proxy.url}/v1", "echo", model_id="echo", api_key_env="RDREC_TEST_KEY",
                                    concurrency=3, timeout=0.5, max_retries=6, backoff=0.05, max_backoff=0.2)
            summary = _generate(prepared, tmp_path, backend, "proxied")
    assert summary["missing"] == 0 and summary["stored"] == 6
    assert {"500", "429", "slow:1.5", "drop", "503"} <= set(proxy.actions())
    # every request the client sent reached the proxy once; every one beyond the six prompts was a retry
    assert backend.counters["requests"] == len(proxy.log) and backend.counters["retries"] == len(proxy.log) - 6 >= 5
    assert backend.counters["failures"] == 0
    assert _texts(tmp_path / "proxied") == _texts(tmp_path / "direct")
    assert {e["auth"] for e in proxy.log} == {f"Bearer {SECRET}"}


def test_client_errors_are_not_retried_and_exhausted_retries_store_nothing(prepared, tmp_path):
    with EchoOpenAI() as upstream, FaultProxy(upstream.url, ["500"] * 100) as proxy:
        backend = OpenAIBackend(f"{proxy.url}/v1", "echo", model_id="echo", api_key_env=None, concurrency=2,
                                timeout=2, max_retries=2, backoff=0.01)
        gens = backend.generate([[{"role": "user", "content": "hello there friend"}]], [1], GenerationParams(do_sample=False))
        assert gens[0].error and "HTTP 500" in gens[0].error and len(proxy.log) == 3
    with EchoOpenAI() as upstream:
        backend = OpenAIBackend(f"{upstream.url}/nope", "echo", api_key_env=None, max_retries=5, backoff=0.01)
        gens = backend.generate([[{"role": "user", "content": "x y z"}]], [1], GenerationParams(do_sample=False))
        assert gens[0].error.startswith("HTTP 404") and backend.counters["retries"] == 0  # a client error: no retry


def test_the_api_key_never_reaches_logs_store_or_provenance(prepared, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("RDREC_TEST_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    with EchoOpenAI() as upstream, FaultProxy(upstream.url, ["500", "429", "500"]) as proxy:
        backend = OpenAIBackend(f"{proxy.url}/v1", "echo", api_key_env="RDREC_TEST_KEY", timeout=5, backoff=0.01)
        _generate(prepared, tmp_path, backend, "keys")
    assert upstream.requests and all(r["auth"] == f"Bearer {SECRET}" for r in upstream.requests)
    assert {e["auth"] for e in proxy.log} == {f"Bearer {SECRET}"}
    assert "retry" in caplog.text and SECRET not in caplog.text and SECRET not in repr(backend)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


# ---- against a real llama.cpp server ----------------------------------------------------------------------------
def _gguf() -> Path | None:
    from rdrec.backbones.shipped import GGUF_NAME
    from rdrec.utils.resolvers import ROOT_DIR

    path = Path(os.environ.get("RDREC_DATA_DIR", ROOT_DIR / "data")) / "models" / "gguf" / GGUF_NAME
    return path if path.is_file() else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """``python -m llama_cpp.server`` with the shipped GGUF on 127.0.0.1."""

    def __init__(self, gguf: Path, port: int, log: Path):
        self.gguf, self.port, self.log = gguf, port, log
        self.proc = None

    def start(self, timeout: float = 120):
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.gguf), "--model_alias", "smollm2",
               "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", "2048", "--n_threads", "1"]
        self.proc = subprocess.Popen(cmd, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited: {self.log.read_text()[-2000:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                conn.request("GET", "/v1/models")
                if conn.getresponse().status == 200:
                    return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("llama.cpp server did not come up")

    def kill(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def llama(tmp_path):
    pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed (pip install 'rdrec[server]')")
    gguf = _gguf()
    if gguf is None:
        pytest.skip("the shipped GGUF is absent (rdrec-generate data=ml100k fetches it once)")
    server = LlamaServer(gguf, _free_port(), tmp_path / "llama.log").start()
    yield server
    server.kill()


@llama_server
def test_real_llama_cpp_server_through_faults_gives_the_clean_answers(llama, prepared, tmp_path):
    url = f"http://127.0.0.1:{llama.port}"
    clean = OpenAIBackend(f"{url}/v1", "smollm2", model_id="smollm2-llama.cpp", api_key_env=None, concurrency=1, timeout=120)
    summary = _generate(prepared, tmp_path, clean, "clean", users=2, max_new_tokens=24)
    assert summary["missing"] == 0 and summary["stored"] == 4
    assert all(r["provenance"]["completion_tokens"] > 0 for r in RationaleStore(tmp_path / "clean").reload().records())
    # one request at a time (the server decodes one at a time); the timeout is well above an answer's ~3 s and
    # below the injected delay
    with FaultProxy(url, ["500", "slow:12", "429", "ok", "drop", "502"]) as proxy:
        faulty = OpenAIBackend(f"{proxy.url}/v1", "smollm2", model_id="smollm2-llama.cpp", api_key_env=None,
                               concurrency=1, timeout=10.0, max_retries=8, backoff=0.1, max_backoff=1.0)
        summary = _generate(prepared, tmp_path, faulty, "faulty", users=2, max_new_tokens=24)
    assert summary["missing"] == 0 and {"500", "slow:12", "429", "drop", "502"} <= set(proxy.actions())
    # greedy decoding on the same server: the faults changed nothing in what was stored
    assert _texts(tmp_path / "faulty") == _texts(tmp_path / "clean")


@llama_server
def test_real_llama_cpp_server_killed_and_restarted_mid_run(llama, prepared, tmp_path):
    url = f"http://127.0.0.1:{llama.port}"
    backend = OpenAIBackend(f"{url}/v1", "smollm2", model_id="smollm2-llama.cpp", api_key_env=None, concurrency=2,
                            timeout=60, max_retries=10, backoff=0.5, max_backoff=2.0)
    segments = tmp_path / "restart"  / "segments"
    restarted = {}

    def restart_after_first_batch():  # the run itself stays in the main thread (Lightning wants it there)
        deadline = time.time() + 300
        while time.time() < deadline and not list(segments.glob("*.jsonl")):
            time.sleep(0.05)
        restarted["after_segments"] = len(list(segments.glob("*.jsonl")))
        llama.kill()  # mid-run: requests in flight fail, new ones are refused
        time.sleep(1.0)
        llama.start()
        restarted["ok"] = True

    watcher = threading.Thread(target=restart_after_first_batch, daemon=True)
    watcher.start()
    done = {"summary": _generate(prepared, tmp_path, backend, "restart", users=4, max_new_tokens=24, batch_size=4)}
    watcher.join(timeout=120)
    assert restarted.get("ok") and restarted["after_segments"] == 1, restarted  # killed with the 2nd batch in flight
    summary = done["summary"]
    assert summary["missing"] == 0 and summary["stored"] == 8
    assert backend.counters["retries"] >= 1 and backend.counters["failures"] == 0
    keys = [json.loads(x)["key"] for s in RationaleStore(tmp_path / "restart").segment_files()
            for x in s.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 8

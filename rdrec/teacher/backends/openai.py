"""Any OpenAI-compatible chat-completions server: vLLM serve, llama.cpp (llama-cpp-python), TGI, OpenAI.

- ``concurrency`` requests in flight (a thread pool over one ``httpx.Client``), each with ``timeout`` seconds;
- 429 and 5xx answers, timeouts and refused/reset connections are retried up to ``max_retries`` times with
  exponential backoff and jitter (``backoff`` · 2^attempt, at most ``max_backoff``; a ``Retry-After`` header
  is honoured); other 4xx answers are not retried (the request itself is wrong);
- a request that still fails yields ``Generation(error=…)``: the prompt gets no entry and a re-run retries it;
- the API key is read from the environment variable named ``api_key_env`` when a request is sent; it is never
  stored on the object, in provenance, in ``repr`` or in log lines (which name the status, never headers);
- credentials in the base URL (``http://user:key@host/v1``) are sent as HTTP basic auth but stripped from the URL
  the backend shows (``base_url``, the model id, provenance, log lines), so they never reach store records,
  exports or logs; a server's error body is logged (and kept as the error text) only after every configured
  secret (the key, the URL's credentials, their basic-auth encoding) is replaced by ``***``;
- each request carries its seed (``seed``), so servers that honour it (vLLM, llama.cpp) answer reproducibly;
- a chat ending in an assistant message (the opening of the answer) is continued according to ``prefill``:
  ``continue`` sends it as the last message with ``continue_final_message: true, add_generation_prompt: false``
  (vLLM serve; llama.cpp's own server continues a final assistant message by itself); ``completions`` renders
  the chat template here (the tokenizer of ``template_tokenizer``, a local HF directory), appends the opening
  and posts to ``/completions`` (any server with a completions endpoint: llama-cpp-python, TGI, vLLM);
  ``none`` drops the opening (servers that do neither, e.g. OpenAI's). The returned text is opening + answer;
- ``stop`` is sent as ``stop`` strings (the start of the next numbered part).
"""

from __future__ import annotations

import base64
import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import httpx

from rdrec.teacher.backends.base import Backend, Generation, GenerationParams, Stop, join_opening, split_opening

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
PREFILL_MODES = ("continue", "completions", "none")


class OpenAIBackend(Backend):
    name = "openai"

    def __init__(self, base_url: str, model: str, model_id: str | None = None, api_key_env: str | None = "OPENAI_API_KEY",
                 concurrency: int = 8, timeout: float = 120.0, max_retries: int = 6, backoff: float = 1.0,
                 max_backoff: float = 60.0, extra_body: dict | None = None,
                 penalty_field: str | None = "repetition_penalty", prefill: str = "continue",
                 template_tokenizer: str | None = None):
        parts = urlsplit(base_url)
        # kept only to authenticate; never shown (repr, describe, ids and logs use the stripped URL)
        self._basic = (unquote(parts.username or ""), unquote(parts.password or "")) if parts.username else None
        self.base_url = strip_credentials(base_url).rstrip("/")
        self.model = model
        self.model_id = strip_credentials(model_id) if model_id else f"{model}@{urlsplit(self.base_url).netloc}"
        if self._basic:
            log.warning("%s: the base URL carries credentials; they are sent as basic auth and kept out of ids, logs "
                        "and exports, but a config override records them as typed (prefer api_key_env)", self.base_url)
        self.api_key_env = api_key_env
        self.concurrency, self.timeout = max(int(concurrency), 1), float(timeout)
        self.max_retries, self.backoff, self.max_backoff = int(max_retries), float(backoff), float(max_backoff)
        self.extra_body = dict(extra_body or {})
        self.penalty_field = penalty_field  # vLLM/TGI: repetition_penalty, llama.cpp: repeat_penalty, OpenAI: none
        if prefill not in PREFILL_MODES:
            raise ValueError(f"prefill: expected one of {PREFILL_MODES}, got {prefill!r}")
        if prefill == "completions" and not template_tokenizer:
            raise ValueError("prefill=completions renders the chat template here: set template_tokenizer (a HF directory)")
        self.prefill, self.template_tokenizer = prefill, template_tokenizer
        self._template = None
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()
        self.counters = {"requests": 0, "retries": 0, "failures": 0}

    def __repr__(self) -> str:  # no key in here, ever
        return f"OpenAIBackend(base_url={self.base_url!r}, model={self.model!r})"

    def describe(self) -> dict:
        return {**super().describe(), "base_url": self.base_url, "served_model": self.model}

    def setup(self, device=None) -> None:
        if self._client is None:
            limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
            auth = httpx.BasicAuth(*self._basic) if self._basic else None
            self._client = httpx.Client(timeout=httpx.Timeout(self.timeout), limits=limits, auth=auth)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def redact(self, text: str) -> str:
        """``text`` with every configured secret (API key, URL credentials, in plain, URL-quoted and basic-auth
        form) replaced by ``***``."""
        secrets = []
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            secrets.append(key)
        if self._basic:
            user, password = self._basic
            secrets += [password, base64.b64encode(f"{user}:{password}".encode()).decode()]
            if not password:  # a token passed as the user name
                secrets.append(user)
        for secret in sorted({s for v in secrets if v for s in (v, quote(v, safe=""))}, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    def _headers(self) -> dict:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def generate(self, chats: list[list[dict]], seeds: list[int], params: GenerationParams,
                 stop: Stop | None = None) -> list[Generation]:
        self.setup()
        one = lambda c, s: self._with_opening(c, self._one(c, s, params, stop))
        if len(chats) <= 1 or self.concurrency == 1:
            return [one(c, s) for c, s in zip(chats, seeds)]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(chats))) as pool:
            return list(pool.map(lambda cs: one(*cs), zip(chats, seeds)))

    def _with_opening(self, chat: list[dict], gen: Generation) -> Generation:
        opening = split_opening(chat)[1]
        if opening and self.prefill != "none" and gen.error is None:
            gen.text = join_opening(opening, gen.text)
        return gen

    def endpoint(self, chat: list[dict]) -> str:
        completions = self.prefill == "completions" and split_opening(chat)[1]
        return f"{self.base_url}/completions" if completions else f"{self.base_url}/chat/completions"

    def payload(self, chat: list[dict], seed: int, params: GenerationParams, stop: Stop | None = None) -> dict:
        conversation, opening = split_opening(chat)
        body = {"model": self.model, "max_tokens": params.max_new_tokens, "seed": int(seed),
                "temperature": params.temperature if params.do_sample else 0.0, "top_p": params.top_p if params.do_sample else 1.0}
        if not opening or self.prefill == "none":
            body["messages"] = conversation
        elif self.prefill == "continue":
            body.update(messages=chat, continue_final_message=True, add_generation_prompt=False)
        else:
            body["prompt"] = self._render(conversation) + opening
        if stop is not None:
            body["stop"] = stop.strings()
        if params.repetition_penalty != 1.0:
            if not self.penalty_field:
                raise ValueError("repetition_penalty != 1 but this server takes none (penalty_field: null)")
            body[self.penalty_field] = params.repetition_penalty
        return {**body, **self.extra_body}

    def _render(self, conversation: list[dict]) -> str:
        with self._lock:
            if self._template is None:
                from transformers import AutoTokenizer

                self._template = AutoTokenizer.from_pretrained(str(self.template_tokenizer))
        return self._template.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)

    def _one(self, chat: list[dict], seed: int, params: GenerationParams, stop: Stop | None = None) -> Generation:
        url = self.endpoint(chat)
        body = self.payload(chat, seed, params, stop)
        last = ""
        for attempt in range(self.max_retries + 1):
            wait = None
            try:
                with self._lock:
                    self.counters["requests"] += 1
                resp = self._client.post(url, json=body, headers=self._headers())
                if resp.status_code == 200:
                    return _parse_response(resp.json())
                last = f"HTTP {resp.status_code}"
                if resp.status_code not in RETRY_STATUS:
                    detail = self.redact(resp.text)[:200].replace("\n", " ")  # redact first: no key cut in two
                    log.error("%s: %s (not retried): %s", url, last, detail)
                    return self._failed(f"{last}: {detail}")
                wait = _retry_after(resp.headers.get("retry-after"))
            except (httpx.TimeoutException, httpx.TransportError) as err:
                last = f"{type(err).__name__}"
            except (ValueError, KeyError, IndexError, TypeError) as err:  # 200 with a body we cannot read
                last = f"bad response: {err}"
            if attempt == self.max_retries:
                break
            delay = wait if wait is not None else min(self.backoff * 2 ** attempt, self.max_backoff)
            delay *= 1 + 0.25 * random.random()  # jitter: concurrent retries do not stampede together
            with self._lock:
                self.counters["retries"] += 1
            log.warning("%s: %s; retry %d/%d in %.1f s", url, self.redact(last), attempt + 1, self.max_retries, delay)
            time.sleep(delay)
        return self._failed(f"{last} after {self.max_retries + 1} attempts")

    def _failed(self, error: str) -> Generation:
        with self._lock:
            self.counters["failures"] += 1
        return Generation(error=self.redact(error))


def strip_credentials(url: str) -> str:
    """``scheme://user:key@host:port/path`` -> ``scheme://host:port/path`` (anything else unchanged)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _parse_response(data: dict) -> Generation:
    choice = data["choices"][0]
    message = choice.get("message") or {}
    text = message.get("content")
    if text is None:
        text = choice.get("text")
    if not isinstance(text, str):
        raise ValueError("no message content")
    usage = data.get("usage") or {}
    return Generation(text=text.strip(), prompt_tokens=int(usage.get("prompt_tokens") or 0),
                      completion_tokens=int(usage.get("completion_tokens") or 0),
                      finish_reason=str(choice.get("finish_reason") or ""))


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None

"""A minimal OpenAI-compatible chat-completions server on 127.0.0.1 for tests.

Reports whose text contains ``RATE-LIMIT`` get one 429 first, ``SERVER-ERROR`` one 500 first.
Every request is recorded, so tests can check what was (not) asked again. With ``hold_after=n``
the server answers n requests and then holds every further one unanswered until ``release()``,
so a test can kill its client at a known point, whatever the machine's speed.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeOpenAI:
    def __init__(self, delay_s: float = 0.0, hold_after: int | None = None):
        self.delay_s = delay_s
        self.hold_after = hold_after
        self._released = threading.Event()
        self.requests: list[str] = []  # case ids, in arrival order (including failed attempts)
        self.answered: list[str] = []
        self.auth: set[str] = set()
        self._failed_once: set[str] = set()
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def release(self) -> None:
        """Answer normally from now on; a held request is dropped unanswered (its client is gone)."""
        self.hold_after = None
        self._released.set()

    def __exit__(self, *exc):
        self._released.set()
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code, body, headers=()):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][-1]["content"]
                case = (re.search(r"CASE\[(.*?)\]", prompt) or re.search(r"(.*)", "unknown")).group(1)
                with fake._lock:
                    fake.requests.append(case)
                    fake.auth.add(self.headers.get("Authorization", ""))
                    first = case not in fake._failed_once
                    if first and ("RATE-LIMIT" in prompt or "SERVER-ERROR" in prompt):
                        fake._failed_once.add(case)
                        if "RATE-LIMIT" in prompt:
                            return self._send(429, {"error": {"message": "rate limited", "type": "rate_limit"}}, [("retry-after-ms", "5")])
                        return self._send(500, {"error": {"message": "boom", "type": "server_error"}}, [("retry-after-ms", "5")])
                    held = fake.hold_after is not None and len(fake.answered) >= fake.hold_after
                if held:
                    fake._released.wait()
                    return
                time.sleep(fake.delay_s)
                with fake._lock:
                    fake.answered.append(case)
                self._send(200, {
                    "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": f"invasive ductal carcinoma; grade 2; case {case}"}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                })

        return Handler

"""A local chat-completions endpoint for the judge tests: counts requests, can fail the first ones.

A failing reply can carry extra headers (Retry-After) and a chosen body; with
`echo_headers` the body repeats the request's headers, as a misconfigured proxy does,
so tests can check that the client never prints them. A successful reply can instead be raw
bytes with a chosen content type (an HTML page, bytes that are not UTF-8), or come after a delay.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeJudge:
    """Serves POST /v1/chat/completions on 127.0.0.1 with a fixed reply; `fail_first` requests get `status`."""

    def __init__(self, reply: str = "Clear and correct. Rating: [[7]]", fail_first: int = 0, status: int = 500,
                 fail_headers: dict | None = None, fail_body: dict | None = None, echo_headers: bool = False,
                 raw: bytes | None = None, content_type: str = "application/json", delay_s: float = 0.0):
        self.reply, self.fail_first, self.status = reply, fail_first, status
        self.raw, self.content_type, self.delay_s = raw, content_type, delay_s
        self.fail_headers, self.fail_body, self.echo_headers = fail_headers or {}, fail_body, echo_headers
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.times: list[float] = []
        self.lock = threading.Lock()
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with judge.lock:
                    judge.requests.append({"path": self.path, **body})
                    judge.headers.append(dict(self.headers))
                    judge.times.append(time.monotonic())
                    failing = len(judge.requests) <= judge.fail_first
                if self.path != "/v1/chat/completions":
                    self._send(404, {"error": "not found"})
                elif failing:
                    doc = dict(judge.fail_body or {"error": "try later"})
                    if judge.echo_headers:
                        doc["request_headers"] = dict(self.headers)
                    self._send(judge.status, doc, judge.fail_headers)
                else:
                    time.sleep(judge.delay_s)
                    self._send(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": judge.reply}}]},
                               raw=judge.raw)

            def _send(self, code: int, doc: dict, extra: dict | None = None, raw: bytes | None = None):
                data = json.dumps(doc).encode() if raw is None else raw
                self.send_response(code)
                self.send_header("Content-Type", "application/json" if raw is None else judge.content_type)
                self.send_header("Content-Length", str(len(data)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> "FakeJudge":
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

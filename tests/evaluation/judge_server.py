"""A local chat-completions endpoint for the judge tests: counts requests, can fail the first ones."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeJudge:
    """Serves POST /v1/chat/completions on 127.0.0.1 with a fixed reply; `fail_first` requests get a 500."""

    def __init__(self, reply: str = "Clear and correct. Rating: [[7]]", fail_first: int = 0, status: int = 500):
        self.reply, self.fail_first, self.status = reply, fail_first, status
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.lock = threading.Lock()
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with judge.lock:
                    judge.requests.append({"path": self.path, **body})
                    judge.headers.append(dict(self.headers))
                    failing = len(judge.requests) <= judge.fail_first
                if self.path != "/v1/chat/completions":
                    self._send(404, {"error": "not found"})
                elif failing:
                    self._send(judge.status, {"error": "try later"})
                else:
                    self._send(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": judge.reply}}]})

            def _send(self, code: int, doc: dict):
                data = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
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

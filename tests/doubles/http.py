"""The scaffolding shared by the provider doubles: a threaded HTTP server on loopback
that hands each POST to `answer(path, headers, body)` and writes its (status, headers,
JSON, plain text or None) back in one piece."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class HttpDouble:
    def __init__(self):
        self.requests: list = []
        self.script: list[tuple[int, dict, dict | None]] = []  # answers to give before the normal ones
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self):
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.script.clear()

    def sent_count(self) -> int:
        with self.lock:
            return len(self.requests)

    def next_scripted(self) -> tuple[int, dict, dict | None] | None:
        """Call with the lock held."""
        return self.script.pop(0) if self.script else None

    def answer(self, path: str, headers, body: bytes) -> tuple[int, dict, dict | None]:  # pragma: no cover
        raise NotImplementedError

    def _handler(self):
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                status, headers, answer = double.answer(self.path.split("?")[0], self.headers, self.rfile.read(length))
                if isinstance(answer, str):
                    payload, content_type = answer.encode(), "text/plain; charset=utf-8"
                else:
                    payload, content_type = b"" if answer is None else json.dumps(answer).encode(), "application/json"
                self.send_response(status)
                if answer is not None:
                    self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client went away (a killed worker): nothing to answer

            def handle(self):
                try:
                    super().handle()
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        return Handler

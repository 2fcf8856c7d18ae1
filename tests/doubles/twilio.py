"""A local double of Twilio's Messages API, spoken to by the real `twilio` client.

It answers POST /2010-04-01/Accounts/{sid}/Messages.json like Twilio (201 with a message
resource, or Twilio's error JSON), records every request, can be scripted to answer
429/5xx or to stall, and can post signed status callbacks back, as Twilio does.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from base64 import b64decode
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

import requests
from twilio.request_validator import RequestValidator

MESSAGES_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<sid>[^/]+)/Messages\.json$")
INVALID_NUMBER = "+15005550001"


class TwilioDouble:
    def __init__(self, *, account_sid: str, auth_token: str):
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.requests: list[dict] = []
        self.script: list[tuple[int, dict, dict]] = []  # answers to give before the normal ones
        self.delay = 0.0
        self.callback_statuses: list[str] = []
        self.callbacks: list[dict] = []  # (url, status, response code) of callbacks posted
        self.request_received = threading.Event()
        self._lock = threading.Lock()
        self._callback_threads: list[threading.Thread] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> TwilioDouble:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.wait_for_callbacks()
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.script.clear()
            self.callbacks.clear()
            self.delay = 0.0
            self.callback_statuses = []
            self.request_received.clear()

    def wait_for_callbacks(self, timeout: float = 10) -> None:
        for thread in list(self._callback_threads):
            thread.join(timeout)

    def sent_count(self) -> int:
        with self._lock:
            return len(self.requests)

    # --- the HTTP side -----------------------------------------------------------

    def _answer(self, path: str, auth: str, form: dict) -> tuple[int, dict, dict]:
        match = MESSAGES_PATH.match(path)
        if match is None:
            return 404, {}, {"code": 20404, "message": "The requested resource was not found", "status": 404}
        if auth != f"{self.account_sid}:{self.auth_token}" or match["sid"] != self.account_sid:
            return 401, {}, {"code": 20003, "message": "Authenticate", "status": 401}
        with self._lock:
            self.requests.append(form)
            scripted = self.script.pop(0) if self.script else None
        self.request_received.set()
        if self.delay:
            time.sleep(self.delay)
        if scripted is not None:
            return scripted
        if form.get("To") == INVALID_NUMBER:
            return 400, {}, {"code": 21211, "message": "The 'To' number is not a valid phone number.", "status": 400}
        sid = "SM" + uuid.uuid4().hex
        if form.get("StatusCallback") and self.callback_statuses:
            thread = threading.Thread(target=self._post_callbacks, args=(form, sid), daemon=True)
            self._callback_threads.append(thread)
            thread.start()
        return 201, {}, self._message(sid, form)

    def _message(self, sid: str, form: dict) -> dict:
        return {
            "sid": sid,
            "account_sid": self.account_sid,
            "to": form.get("To"),
            "from": form.get("From"),
            "messaging_service_sid": form.get("MessagingServiceSid"),
            "body": form.get("Body"),
            "status": "queued",
            "num_segments": "1",
            "direction": "outbound-api",
            "price": None,
            "price_unit": "USD",
            "error_code": None,
            "error_message": None,
            "date_created": formatdate(usegmt=True),
            "date_updated": formatdate(usegmt=True),
            "date_sent": None,
            "api_version": "2010-04-01",
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
        }

    def _post_callbacks(self, form: dict, sid: str) -> None:
        url = form["StatusCallback"]
        validator = RequestValidator(self.auth_token)
        for status in self.callback_statuses:
            time.sleep(0.05)
            params = {
                "AccountSid": self.account_sid,
                "MessageSid": sid,
                "SmsSid": sid,
                "MessageStatus": status,
                "SmsStatus": status,
                "To": form.get("To", ""),
                "From": form.get("From", ""),
                "ApiVersion": "2010-04-01",
            }
            signature = validator.compute_signature(url, params)
            response = requests.post(url, data=params, headers={"X-Twilio-Signature": signature}, timeout=10)
            with self._lock:
                self.callbacks.append({"url": url, "status": status, "code": response.status_code})

    def _handler(self):
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                form = dict(parse_qsl(self.rfile.read(length).decode()))
                auth = self.headers.get("Authorization", "")
                credentials = b64decode(auth[6:]).decode() if auth.startswith("Basic ") else ""
                status, headers, body = double._answer(self.path.split("?")[0], credentials, form)
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
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

"""A local double of Twilio's Messages API, spoken to by the real `twilio` client.

It answers POST /2010-04-01/Accounts/{sid}/Messages.json like Twilio (201 with a message
resource, or Twilio's error JSON), records every request, can be scripted to answer
429/5xx or to stall, and can post signed status callbacks back, as Twilio does.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from base64 import b64decode
from email.utils import formatdate
from urllib.parse import parse_qsl

import requests
from twilio.request_validator import RequestValidator

from tests.doubles.http import HttpDouble

MESSAGES_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<sid>[^/]+)/Messages\.json$")
INVALID_NUMBER = "+15005550001"


class TwilioDouble(HttpDouble):
    def __init__(self, *, account_sid: str, auth_token: str):
        super().__init__()
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.delay = 0.0
        self.callback_statuses: list[str] = []
        self.callbacks: list[dict] = []  # (url, status, response code) of callbacks posted
        self.request_received = threading.Event()
        self._callback_threads: list[threading.Thread] = []

    def stop(self) -> None:
        self.wait_for_callbacks()
        super().stop()

    def reset(self) -> None:
        super().reset()
        with self.lock:
            self.callbacks.clear()
            self.delay = 0.0
            self.callback_statuses = []
            self.request_received.clear()

    def wait_for_callbacks(self, timeout: float = 10) -> None:
        for thread in list(self._callback_threads):
            thread.join(timeout)

    # --- the HTTP side -----------------------------------------------------------

    def answer(self, path: str, headers, body: bytes) -> tuple[int, dict, dict]:
        form = dict(parse_qsl(body.decode()))
        authorization = headers.get("Authorization", "")
        auth = b64decode(authorization[6:]).decode() if authorization.startswith("Basic ") else ""
        match = MESSAGES_PATH.match(path)
        if match is None:
            return 404, {}, {"code": 20404, "message": "The requested resource was not found", "status": 404}
        if auth != f"{self.account_sid}:{self.auth_token}" or match["sid"] != self.account_sid:
            return 401, {}, {"code": 20003, "message": "Authenticate", "status": 401}
        with self.lock:
            self.requests.append(form)
            scripted = self.next_scripted()
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
            with self.lock:
                self.callbacks.append({"url": url, "status": status, "code": response.status_code})

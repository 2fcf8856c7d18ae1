"""A local double of Twilio's Messages and Calls APIs, spoken to by the real `twilio` client.

It answers POST /2010-04-01/Accounts/{sid}/Messages.json (SMS, and WhatsApp with
`whatsapp:` addresses) and .../Calls.json like Twilio (201 with a message or call
resource, or Twilio's error JSON), records every request, can be scripted to answer
429/5xx or to stall, and can post signed status callbacks back, as Twilio does: message
statuses, and call progress (initiated, ringing, in-progress, completed with its
duration and who answered).

Some numbers answer as Twilio does for them: INVALID_NUMBER is error 21211 (not a valid
phone number), UNSUBSCRIBED_NUMBER 21610 (replied STOP to the sender), and on WhatsApp
SESSION_EXPIRED_NUMBER 63016 (outside the 24-hour session window).
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

MESSAGES_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<sid>[^/]+)/(?P<resource>Messages|Calls)\.json$")
INVALID_NUMBER = "+15005550001"
UNSUBSCRIBED_NUMBER = "+15005550004"
SESSION_EXPIRED_NUMBER = "+15005550063"
WHATSAPP = "whatsapp:"

ERRORS = {
    INVALID_NUMBER: (21211, "The 'To' number is not a valid phone number."),
    UNSUBSCRIBED_NUMBER: (21610, "Attempt to send to unsubscribed recipient"),
}
WHATSAPP_ERRORS = {
    SESSION_EXPIRED_NUMBER: (
        63016,
        "Failed to send freeform message because you are outside the allowed window. "
        "If you are using WhatsApp, please use a Message Template.",
    ),
}

CALL_DURATION = "12"  # seconds, in the completed callback


class TwilioDouble(HttpDouble):
    def __init__(self, *, account_sid: str, auth_token: str):
        super().__init__()
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.delay = 0.0
        self.callback_statuses: list[str] = []
        self.call_callback_statuses: list[str] = []
        self.callbacks: list[dict] = []  # (url, status, response code) of callbacks posted
        self.request_received = threading.Event()
        self._callback_threads: list[threading.Thread] = []
        # A rate limit like Twilio's: over `limit` requests in any second, a 429.
        self.limit: int | None = None
        self.arrivals: list[float] = []  # monotonic time of each request
        self.throttled = 0

    def stop(self) -> None:
        self.wait_for_callbacks()
        super().stop()

    def reset(self) -> None:
        super().reset()
        with self.lock:
            self.limit, self.throttled = None, 0
            self.arrivals.clear()
            self.callbacks.clear()
            self.delay = 0.0
            self.callback_statuses = []
            self.call_callback_statuses = []
            self.request_received.clear()

    def busiest_second(self) -> int:
        """The most requests that arrived within any one second."""
        with self.lock:
            stamps = list(self.arrivals)
        most, start = 0, 0
        for end, stamp in enumerate(stamps):
            while stamp - stamps[start] >= 1:
                start += 1
            most = max(most, end - start + 1)
        return most

    def wait_for_callbacks(self, timeout: float = 10) -> None:
        for thread in list(self._callback_threads):
            thread.join(timeout)

    # --- the HTTP side -----------------------------------------------------------

    def answer(self, path: str, headers, body: bytes) -> tuple[int, dict, dict]:
        form = self._form(body)
        authorization = headers.get("Authorization", "")
        auth = b64decode(authorization[6:]).decode() if authorization.startswith("Basic ") else ""
        match = MESSAGES_PATH.match(path)
        if match is None:
            return 404, {}, {"code": 20404, "message": "The requested resource was not found", "status": 404}
        if auth != f"{self.account_sid}:{self.auth_token}" or match["sid"] != self.account_sid:
            return 401, {}, {"code": 20003, "message": "Authenticate", "status": 401}
        with self.lock:
            now = time.monotonic()
            self.arrivals.append(now)
            if self.limit is not None and sum(1 for t in self.arrivals[-self.limit - 1 :] if now - t < 1) > self.limit:
                self.throttled += 1
                return 429, {"Retry-After": "1"}, {"code": 20429, "message": "Too Many Requests", "status": 429}
            self.requests.append(form)
            scripted = self.next_scripted()
        self.request_received.set()
        if self.delay:
            time.sleep(self.delay)
        if scripted is not None:
            return scripted
        to = form.get("To", "")
        number = to.removeprefix(WHATSAPP)
        error = ERRORS.get(number) or (WHATSAPP_ERRORS.get(number) if to.startswith(WHATSAPP) else None)
        if error is not None:
            code, message = error
            return (
                400,
                {},
                {
                    "code": code,
                    "message": message,
                    "more_info": f"https://www.twilio.com/docs/errors/{code}",
                    "status": 400,
                },
            )
        if match["resource"] == "Calls":
            sid, statuses, resource = "CA" + uuid.uuid4().hex, self.call_callback_statuses, self._call
            post = self._post_call_callbacks
        else:
            sid, statuses, resource = "SM" + uuid.uuid4().hex, self.callback_statuses, self._message
            post = self._post_callbacks
        if form.get("StatusCallback") and statuses:
            thread = threading.Thread(target=post, args=(form, sid, list(statuses)), daemon=True)
            self._callback_threads.append(thread)
            thread.start()
        return 201, {}, resource(sid, form)

    @staticmethod
    def _form(body: bytes) -> dict:
        """The form as a dict; a parameter given more than once (StatusCallbackEvent) is a list."""
        form: dict = {}
        for key, value in parse_qsl(body.decode()):
            if key in form:
                form[key] = [*form[key], value] if isinstance(form[key], list) else [form[key], value]
            else:
                form[key] = value
        return form

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

    def _call(self, sid: str, form: dict) -> dict:
        return {
            "sid": sid,
            "account_sid": self.account_sid,
            "to": form.get("To"),
            "to_formatted": form.get("To"),
            "from": form.get("From"),
            "from_formatted": form.get("From"),
            "status": "queued",
            "direction": "outbound-api",
            "answered_by": None,
            "duration": None,
            "price": None,
            "price_unit": "USD",
            "start_time": None,
            "end_time": None,
            "date_created": formatdate(usegmt=True),
            "date_updated": formatdate(usegmt=True),
            "api_version": "2010-04-01",
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Calls/{sid}.json",
        }

    def _post_call_callbacks(self, form: dict, sid: str, statuses: list[str]) -> None:
        for status in statuses:
            params = {
                "AccountSid": self.account_sid,
                "CallSid": sid,
                "CallStatus": status,
                "Direction": "outbound-api",
                "To": form.get("To", ""),
                "From": form.get("From", ""),
                "ApiVersion": "2010-04-01",
            }
            if status in ("in-progress", "completed"):
                params["AnsweredBy"] = "human"
            if status == "completed":
                params["CallDuration"] = CALL_DURATION
            self._post_signed(form["StatusCallback"], params, status)

    def _post_signed(self, url: str, params: dict, status: str) -> None:
        time.sleep(0.05)
        signature = RequestValidator(self.auth_token).compute_signature(url, params)
        response = requests.post(url, data=params, headers={"X-Twilio-Signature": signature}, timeout=10)
        with self.lock:
            self.callbacks.append({"url": url, "status": status, "code": response.status_code})

    def _post_callbacks(self, form: dict, sid: str, statuses: list[str]) -> None:
        for status in statuses:
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
            self._post_signed(form["StatusCallback"], params, status)

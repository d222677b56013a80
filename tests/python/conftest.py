"""Fixtures for the REST compatibility tests.

`server` starts the real Rookery binary the same way as tests/js/support/server.mjs:
a throw-away config with the channels `chat` (require_auth) and `open`, port 0, and
the `rookery listening on http://HOST:PORT` line on stdout. `Subscriber` is a small
WebSocket client speaking PROTOCOL.md, used to observe what the REST calls do.
"""

import json
from contextlib import ExitStack
import os
import queue
import re
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
import requests
from websockets.sync.client import connect

REPO_ROOT = Path(__file__).resolve().parents[2]
CHAT = {"id": "chat", "secret": "chat-secret-for-tests-only"}
OPEN = {"id": "open", "secret": "open-secret-for-tests-only"}
WAIT = 5.0
LISTENING = re.compile(r"rookery listening on (http://[\d.]+:\d+)")

# The servers are on loopback: never route test traffic through a proxy.
os.environ["NO_PROXY"] = ",".join(filter(None, ["127.0.0.1", "localhost", os.environ.get("NO_PROXY")]))


def rookery_binary():
    binary = Path(os.environ.get("ROOKERY_BIN") or REPO_ROOT / "target" / "debug" / "rookery")
    if not binary.exists():
        raise RuntimeError(f"rookery binary not found at {binary}; run cargo build first")
    return binary


class Server:
    """A running Rookery process; `url` is `http://127.0.0.1:PORT`."""

    def __init__(self, extra_toml=""):
        self.dir = tempfile.mkdtemp(prefix="rookery-pytest-")
        config = Path(self.dir) / "rookery.toml"
        config.write_text(
            f"""
listen = "127.0.0.1:0"
static_dir = {json.dumps(str(REPO_ROOT / "static"))}
policies_dir = {json.dumps(str(REPO_ROOT / "policies"))}
data_dir = {json.dumps(self.dir)}
auth_channel = "{CHAT["id"]}"

[[channel]]
id = "{CHAT["id"]}"
secret = "{CHAT["secret"]}"
require_auth = true
policy = "default"

[[channel]]
id = "{OPEN["id"]}"
secret = "{OPEN["secret"]}"
require_auth = false
policy = "default"
{extra_toml}
"""
        )
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "warn")
        self.output = []
        self.proc = subprocess.Popen(
            [str(rookery_binary()), "serve", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
        )
        found = queue.Queue()

        def pump():
            # Keep draining so the server never blocks on a full pipe.
            for line in self.proc.stdout:
                self.output.append(line)
                m = LISTENING.search(line)
                if m:
                    found.put(m.group(1))
            found.put(None)

        threading.Thread(target=pump, daemon=True).start()
        try:
            url = found.get(timeout=10)
        except queue.Empty:
            url = None
        if url is None:
            self.stop()
            raise RuntimeError("rookery did not start in 10 s:\n" + self.logs())
        self.url = url
        self.ws_url = url.replace("http://", "ws://") + "/v3/websocket"
        self.api = url + "/api"

    def logs(self):
        return "".join(self.output)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError("rookery did not stop within 10 s of SIGTERM:\n" + self.logs())

    def token(self, client_id, name=None):
        """Mints a token through the embedded auth service, as the tutorial page does."""
        files = {"clientID": (None, client_id)}
        if name is not None:
            files["name"] = (None, name)
        res = requests.post(self.url + "/auth", files=files, timeout=WAIT)
        assert res.status_code == 200, f"/auth {res.status_code}: {res.text}"
        return res.text


class Subscriber:
    """A WebSocket connection speaking PROTOCOL.md; keeps every frame it received."""

    def __init__(self, server, channel, client_data=None):
        self._stack = ExitStack()
        self.ws = self._stack.enter_context(connect(server.ws_url, proxy=None, open_timeout=WAIT, compression=None))
        self.frames = []  # every frame received, in order
        self._pending = []  # frames not yet consumed by next()
        self._callback = 0
        reply = self.request("handshake", channel=channel, client_data=client_data)
        assert "error" not in reply, f"handshake failed: {reply}"
        self.id = reply["client_id"]
        self.require_auth = reply["require_auth"]

    def send(self, frame):
        self.ws.send(json.dumps(frame))

    def _recv(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        frame = json.loads(self.ws.recv(timeout=remaining))
        self.frames.append(frame)
        return frame

    def next(self, match, what, timeout=WAIT):
        """Returns (and consumes) the first unconsumed frame for which `match` is true."""
        for i, frame in enumerate(self._pending):
            if match(frame):
                return self._pending.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            try:
                frame = self._recv(deadline)
            except TimeoutError:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; received: {self.frames}") from None
            if match(frame):
                return frame
            self._pending.append(frame)

    def request(self, type_, **fields):
        """Sends a request with a fresh callback and returns its reply."""
        callback = self._callback
        self._callback += 1
        self.send({"type": type_, **fields, "callback": callback})
        return self.next(lambda f: f.get("callback") == callback, f"reply to {type_} (callback {callback})")

    def authenticate(self, server, name=None):
        reply = self.request("authenticate", token=server.token(self.id, name))
        assert reply == {"callback": reply["callback"]}, f"authenticate failed: {reply}"

    def subscribe(self, room, **fields):
        reply = self.request("subscribe", room=room, **fields)
        assert reply == {"callback": reply["callback"]}, f"subscribe {room!r} failed: {reply}"

    def unsubscribe(self, room):
        reply = self.request("unsubscribe", room=room)
        assert reply == {"callback": reply["callback"]}, f"unsubscribe {room!r} failed: {reply}"

    def publication(self, room, what=None):
        """The next `publish` frame for `room`."""
        return self.next(lambda f: f.get("type") == "publish" and f.get("room") == room, what or f"publish in {room!r}")

    def close(self):
        self._stack.close()


@pytest.fixture
def server():
    srv = Server()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def subscribers(server):
    """Factory for connected subscribers, all closed at the end of the test."""
    made = []

    def make(channel, client_data=None, name=None):
        sub = Subscriber(server, channel, client_data)
        made.append(sub)
        if sub.require_auth:
            sub.authenticate(server, name)
        return sub

    yield make
    for sub in made:
        sub.close()


def wait_until(check, what, timeout=WAIT):
    """Polls a REST view that converges after a socket event the test cannot observe directly."""
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if last is True:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last}")
        time.sleep(0.02)

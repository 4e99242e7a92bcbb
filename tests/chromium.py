"""Headless Chromium driven over the Chrome DevTools Protocol, with the standard library
only: a minimal WebSocket client (RFC 6455: text frames, masked from the client, ping,
close, fragments) and a page object with the few commands the review-site tests use.

Chromium is started with ``--remote-debugging-port=0`` and a fresh profile; the port it
picked is read from the profile's ``DevToolsActivePort``. :class:`Chromium` stops it by
its PID, and then its process group (the renderers), on close, also when a test fails.
Every wait has a deadline.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

INSTALL_HINT = "chromium is not installed: run `make system-deps` (Debian/Ubuntu package chromium)"
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


class BrowserError(RuntimeError):
    pass


class WebSocket:
    """A client WebSocket on a plain TCP socket (the DevTools endpoint is ws://127.0.0.1)."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        if not url.startswith("ws://"):
            raise BrowserError(f"not a ws:// URL: {url}")
        host_port, _, path = url[len("ws://") :].partition("/")
        host, _, port = host_port.partition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise BrowserError("the DevTools endpoint closed the connection")
            response += chunk
        head, _, self._buffer = response.partition(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise BrowserError(f"WebSocket handshake refused: {head[:200]!r}")

    def send(self, text: str) -> None:
        payload = text.encode()
        header = bytearray([0x81])  # FIN, text
        if len(payload) < 126:
            header.append(0x80 | len(payload))
        elif len(payload) < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", len(payload))
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.settimeout(10)  # reads shorten it to their deadline
        self.sock.sendall(bytes(header) + mask + masked)

    def _read(self, n: int, deadline: float) -> bytes:
        while len(self._buffer) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no message from Chromium in time")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(max(65536, n - len(self._buffer)))
            except TimeoutError:
                raise TimeoutError("no message from Chromium in time") from None
            if not chunk:
                raise BrowserError("Chromium closed the DevTools connection")
            self._buffer += chunk
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def receive(self, deadline: float) -> str:
        """The next text message (fragments joined; pings answered)."""
        parts: list[bytes] = []
        while True:
            first, second = self._read(2, deadline)
            opcode, length = first & 0x0F, second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", self._read(2, deadline))
            elif length == 127:
                (length,) = struct.unpack("!Q", self._read(8, deadline))
            mask = self._read(4, deadline) if second & 0x80 else b""
            payload = self._read(length, deadline)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x9:  # ping
                self.sock.sendall(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
                continue
            if opcode == 0x8:
                raise BrowserError("Chromium closed the DevTools connection")
            if opcode in (0x0, 0x1, 0x2):
                parts.append(payload)
                if first & 0x80:  # FIN
                    return b"".join(parts).decode()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class Chromium:
    """One headless Chromium process; :meth:`page` opens a tab. Use as a context manager
    (or call :meth:`close`): the process is stopped by PID, its group too."""

    def __init__(self, executable: str, log: Path, timeout: float = 30.0) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="whisperq-chromium-"))
        args = [
            executable,
            "--headless",
            "--remote-debugging-port=0",
            f"--user-data-dir={self.profile}",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--mute-audio",
            "--autoplay-policy=no-user-gesture-required",
            "--hide-scrollbars",
            "--window-size=1200,800",
            "about:blank",
        ]
        if os.geteuid() == 0:  # the sandbox refuses to run as root (containers, CI)
            args.insert(1, "--no-sandbox")
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._ids = itertools.count(1)
        self.handlers: dict[str, Callable[[dict[str, Any]], None]] = {}
        self.ws: WebSocket | None = None
        try:
            self.ws = WebSocket(self._endpoint(timeout, log))
        except BaseException:
            self.close()
            raise

    def _endpoint(self, timeout: float, log: Path) -> str:
        active = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrowserError(f"Chromium exited with {self.process.returncode}; see {log}")
            lines = active.read_text().splitlines() if active.exists() else []
            if len(lines) >= 2:
                return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
            time.sleep(0.05)
        raise BrowserError(f"Chromium did not open its DevTools port in {timeout} s; see {log}")

    def command(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """Send one CDP command and wait for its answer; events that arrive meanwhile go to
        the handler of their session (:meth:`page` registers one per tab)."""
        assert self.ws is not None
        ident = next(self._ids)
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while True:
            data = json.loads(self.ws.receive(deadline))
            if data.get("id") == ident:
                if "error" in data:
                    raise BrowserError(f"{method}: {data['error']}")
                result: dict[str, Any] = data.get("result", {})
                return result
            handler = self.handlers.get(data.get("sessionId", ""))
            if handler is not None and "method" in data:
                handler(data)

    def page(self, width: int = 1200, height: int = 800) -> Page:
        target = self.command("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.command("Target.attachToTarget", {"targetId": target, "flatten": True})
        return Page(self, target, session["sessionId"], width, height)

    def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(BrowserError, TimeoutError, OSError):
                self.command("Browser.close", timeout=5)
            self.ws.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        # its renderers and helpers: the group it leads (start_new_session)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self._log.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Page:
    """A tab: navigate, evaluate, click, type, screenshot; collects console errors and
    uncaught exceptions (``errors``)."""

    def __init__(self, browser: Chromium, target: str, session: str, width: int, height: int):
        self.browser, self.target, self.session = browser, target, session
        self.errors: list[str] = []
        self._loaded = False
        browser.handlers[session] = self._event
        self.send("Page.enable")
        self.send("Runtime.enable")
        self.send("Log.enable")
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def _event(self, event: dict[str, Any]) -> None:
        method, params = event["method"], event.get("params", {})
        if method == "Page.loadEventFired":
            self._loaded = True
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text")
            self.errors.append(f"exception: {text}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            values = [arg.get("value", arg.get("description")) for arg in params.get("args", [])]
            self.errors.append(f"console.{params['type']}: {values}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.errors.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}")

    def send(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30.0):
        return self.browser.command(method, params, self.session, timeout)

    def pump(self, seconds: float) -> None:
        """Take in the events of the next ``seconds`` (a cheap command round trip)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.evaluate("1")
            time.sleep(0.02)

    def navigate(self, url: str, timeout: float = 30.0) -> None:
        self._loaded = False
        answer = self.send("Page.navigate", {"url": url}, timeout)
        if answer.get("errorText"):
            raise BrowserError(f"{url}: {answer['errorText']}")
        deadline = time.monotonic() + timeout
        while not self._loaded:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not finish loading in {timeout} s")
            self.evaluate("1")
            time.sleep(0.02)

    def evaluate(self, expression: str, timeout: float = 30.0) -> Any:
        answer = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            timeout,
        )
        if "exceptionDetails" in answer:
            raise BrowserError(f"{expression[:80]}: {answer['exceptionDetails']}")
        return answer.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 15.0) -> Any:
        """Poll ``expression`` until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"still false after {timeout} s: {expression}")
            time.sleep(0.05)

    def click(self, selector: str) -> None:
        """A real mouse click (press and release) in the middle of the element."""
        box = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " if (!e) return null; e.scrollIntoView({block: 'center'});"
            " const r = e.getBoundingClientRect();"
            " return {x: r.left + r.width / 2, y: r.top + r.height / 2}; })()"
        )
        if box is None:
            raise BrowserError(f"nothing matches {selector}")
        for kind in ("mousePressed", "mouseReleased"):
            self.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": box["x"], "y": box["y"], "button": "left", "clickCount": 1},
            )

    def type(self, selector: str, text: str) -> None:
        self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        self.send("Input.insertText", {"text": text})

    def key(self, key: str, code: str, key_code: int) -> None:
        """Press and release a key (" "/"Space"/32, "ArrowRight"/"ArrowRight"/39, ...)."""
        for kind in ("keyDown", "keyUp"):
            params = {"type": kind, "key": key, "code": code, "windowsVirtualKeyCode": key_code}
            if kind == "keyDown" and len(key) == 1:
                params["text"] = key
            self.send("Input.dispatchKeyEvent", params)

    def screenshot(self, path: Path, full_page: bool = False) -> Path:
        """A PNG of the viewport, or of the whole page (as wide as the viewport)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.send("Page.getLayoutMetrics")["cssContentSize"]
            params["captureBeyondViewport"] = True
            params["clip"] = {"x": 0, "y": 0, "width": size["width"], "height": size["height"],
                              "scale": 1}  # fmt: skip
        data = self.send("Page.captureScreenshot", params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        self.browser.handlers.pop(self.session, None)
        with contextlib.suppress(BrowserError, TimeoutError, OSError):
            self.browser.command("Target.closeTarget", {"targetId": self.target}, timeout=10)

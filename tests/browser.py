"""Open a local HTML file in headless Chromium and report what the page did, through the
DevTools protocol on loopback: console errors, network requests, images' natural sizes,
and a screenshot. Used by the report's browser test; needs /usr/bin/chromium and the
`websocket-client` package, nothing else, and never talks to anything but 127.0.0.1.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--metrics-recording-only",
    # Any host name other than loopback fails to resolve: the page cannot reach out.
    f"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE {LOOPBACK}",
    "--remote-debugging-port=0",
    f"--remote-debugging-address={LOOPBACK}",
    "--window-size=1400,4000",
]
PAGE_FACTS = """JSON.stringify({
  images: Array.from(document.images).map(i => [i.naturalWidth, i.naturalHeight, i.complete]),
  sections: Array.from(document.querySelectorAll('section')).map(s => s.id),
  title: document.title,
})"""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class PageVisit:
    """What happened while Chromium loaded the page."""

    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    images: list[list[Any]] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)
    title: str = ""
    screenshot: bytes = b""


class _DevTools:
    def __init__(self, url: str, timeout: float):
        import websocket  # websocket-client (the `test` extra)

        self.socket = websocket.create_connection(
            url, timeout=timeout, suppress_origin=True, http_no_proxy=[LOOPBACK]
        )
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def wait_for(self, event: str, deadline: float) -> None:
        while not any(e["method"] == event for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {event} from Chromium")
            message = json.loads(self.socket.recv())
            if "method" in message:
                self.events.append(message)


def visit(page: Path, timeout: float = 60.0) -> PageVisit:
    """Load `page` from disk (file:// URL) in a fresh headless Chromium and collect the
    page's console errors, exceptions, failed loads, requests, images and a screenshot."""
    binary = chromium()
    if binary is None:
        raise FileNotFoundError("chromium is not installed")
    with tempfile.TemporaryDirectory(prefix="hpo-chromium-") as profile:
        log = open(Path(profile) / "chromium.log", "wb")  # noqa: SIM115 - closed below
        process = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            return _drive(Path(profile), page, timeout)
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)
            log.close()


def _drive(profile: Path, page: Path, timeout: float) -> PageVisit:
    deadline = time.monotonic() + timeout
    port_file = profile / "DevToolsActivePort"
    while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
        if time.monotonic() > deadline:
            raise TimeoutError("Chromium did not open its DevTools port")
        time.sleep(0.1)
    port = int(port_file.read_text().splitlines()[0])
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, direct
    with opener.open(f"http://{LOOPBACK}:{port}/json/list", timeout=timeout) as answer:
        targets = json.loads(answer.read())
    target = next(t for t in targets if t.get("type") == "page")
    tools = _DevTools(target["webSocketDebuggerUrl"], timeout)
    try:
        for domain in ("Page", "Runtime", "Log", "Network"):
            tools.call(f"{domain}.enable")
        tools.call("Page.navigate", url=page.resolve().as_uri())
        tools.wait_for("Page.loadEventFired", deadline)
        facts = json.loads(
            tools.call("Runtime.evaluate", expression=PAGE_FACTS, returnByValue=True)["result"][
                "value"
            ]
        )
        shot = tools.call("Page.captureScreenshot", format="png")
        with contextlib.suppress(Exception):
            tools.call("Browser.close")
    finally:
        tools.socket.close()
    result = PageVisit(
        images=facts["images"],
        sections=facts["sections"],
        title=facts["title"],
        screenshot=base64.b64decode(shot["data"]),
    )
    for event in tools.events:
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            result.errors.append(f"console: {params.get('args')}")
        elif method == "Runtime.exceptionThrown":
            result.errors.append(f"exception: {params.get('exceptionDetails')}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            result.errors.append(f"log: {params['entry'].get('text')}")
        elif method == "Network.loadingFailed":
            result.errors.append(f"failed load: {params.get('errorText')}")
        elif method == "Network.requestWillBeSent":
            result.requests.append(params["request"]["url"])
    return result

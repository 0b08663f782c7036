"""Open a report.html in headless Chromium through the DevTools protocol and look at it.

Chromium talks the protocol over a pipe (`--remote-debugging-pipe`: commands on fd 3, replies on
fd 4, each message JSON ended by a NUL byte), so this needs no websocket library and no network.
`check(html)` loads the page, records every console error and uncaught exception, reads the
page's text after its script ran, exercises the sample browser's filters and returns
screenshots of the page's sections as PNG bytes. scripts/report-screenshots saves them;
tests/test_report_html.py asserts on them where Chromium is installed.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WIDTH = 1280


def find_chromium() -> str | None:
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """One headless Chromium and one page, driven over the DevTools pipe."""

    def __init__(self, binary: str, timeout: float = 60.0):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="ectc-chromium-")
        cmd_r, cmd_w = os.pipe()
        res_r, res_w = os.pipe()
        # the child must see them as fds 3 and 4; copy them above 10 first so dup2 cannot clobber
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (cmd_r, res_w)]

        def child_fds() -> None:
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
             "--no-default-browser-check", "--disable-extensions", "--remote-debugging-pipe",
             f"--user-data-dir={self.profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            close_fds=False, preexec_fn=child_fds)
        for fd in (cmd_r, res_w, *high):
            os.close(fd)
        self.out = os.fdopen(cmd_w, "wb")
        self.inp = os.fdopen(res_r, "rb")
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict] = []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]

    def _read(self) -> dict:
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self.buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("no reply from Chromium")
            chunk = os.read(self.inp.fileno(), 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: bool = False) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        self.out.write(json.dumps(message).encode() + b"\0")
        self.out.flush()
        while True:
            reply = self._read()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def page(self, method: str, params: dict | None = None) -> dict:
        return self.call(method, params, session=True)

    def wait_for(self, event: str) -> dict:
        for i, e in enumerate(self.events):
            if e.get("method") == event:
                return self.events.pop(i)
        while True:
            e = self._read()
            if e.get("method") == event:
                return e
            self.events.append(e)

    def evaluate(self, expression: str):
        result = self.page("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, OSError, TimeoutError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for f in (self.out, self.inp):
            try:
                f.close()
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)


@dataclass
class Look:
    """What the browser saw."""

    errors: list[str] = field(default_factory=list)  # console errors and uncaught exceptions
    text: str = ""  # the page's visible text after its script ran
    screenshots: dict[str, bytes] = field(default_factory=dict)  # section name -> PNG
    filtered_count: str = ""  # the sample browser's count line after filtering


def _errors(events: list[dict]) -> list[str]:
    out = []
    for e in events:
        method, p = e.get("method"), e.get("params", {})
        if method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            out.append("exception: " + str(d.get("exception", {}).get("description") or d.get("text")))
        elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append("console.error: " + " ".join(str(a.get("value", a.get("description"))) for a in p.get("args", [])))
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            out.append("log: " + p["entry"].get("text", ""))
    return out


def _section(b: Browser, start_id: str, end_id: str | None, max_height: int = 2200) -> bytes | None:
    """From the heading `start_id` down to the heading `end_id` (or max_height)."""
    rect = b.evaluate(f"""(() => {{ const s = document.getElementById({json.dumps(start_id)});
        if (!s) return null; const e = {json.dumps(end_id)} && document.getElementById({json.dumps(end_id)});
        const top = s.getBoundingClientRect().top + window.scrollY;
        const bottom = e ? e.getBoundingClientRect().top + window.scrollY : top + {max_height};
        return {{x: 0, y: top - 8, width: {WIDTH}, height: bottom - top}}; }})()""")
    if not rect:
        return None
    rect["height"] = min(max(rect["height"], 200), max_height)
    png = b.page("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                            "clip": {**rect, "scale": 1}})["data"]
    return base64.b64decode(png)


def check(html: Path, binary: str | None = None, filters: dict[str, str] | None = None) -> Look:
    """Load `html`, collect errors and text, screenshot the sections, then set the sample
    browser's `filters` (select id -> value, e.g. {"f-arm": "ect"}) and screenshot it again."""
    binary = binary or find_chromium()
    if binary is None:
        raise FileNotFoundError("no Chromium found (" + ", ".join(CANDIDATES) + ")")
    b = Browser(binary)
    look = Look()
    try:
        for domain in ("Runtime.enable", "Page.enable", "Log.enable"):
            b.page(domain)
        b.page("Emulation.setDeviceMetricsOverride", {"width": WIDTH, "height": 1000, "deviceScaleFactor": 1,
                                                       "mobile": False})
        b.page("Page.navigate", {"url": Path(html).resolve().as_uri()})
        b.wait_for("Page.loadEventFired")
        look.text = b.evaluate("document.body.innerText")
        shots = {"top": _section(b, "top", "metrics", 1400), "metrics": _section(b, "metrics", "sweep"),
                 "sweep": _section(b, "sweep", "shares" if b.evaluate("!!document.getElementById('shares')") else "plots"),
                 "side-by-side": _section(b, "side-by-side", "browser", 1600),
                 "browser": _section(b, "browser", None, 1600)}
        for name, value in (filters or {}).items():
            b.evaluate(f"""(() => {{ const e = document.getElementById({json.dumps(name)});
                e.value = {json.dumps(value)}; e.dispatchEvent(new Event('input')); }})()""")
        if filters:
            look.filtered_count = b.evaluate("document.getElementById('count').textContent")
            shots["browser-filtered"] = _section(b, "browser", None, 1600)
        look.screenshots = {k: v for k, v in shots.items() if v}
        look.errors = _errors(b.events)
    finally:
        b.close()
    return look


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="screenshot a report.html in headless Chromium")
    p.add_argument("html", type=Path)
    p.add_argument("--out", type=Path, required=True, help="folder for the PNG files")
    p.add_argument("--prefix", default="report")
    p.add_argument("--filter", action="append", default=[], metavar="ID=VALUE",
                   help="set a sample-browser filter before the last screenshot (f-arm, f-seed, f-cond, f-tag, f-item)")
    args = p.parse_args(argv)
    look = check(args.html, filters=dict(f.split("=", 1) for f in args.filter))
    args.out.mkdir(parents=True, exist_ok=True)
    for name, png in look.screenshots.items():
        path = args.out / f"{args.prefix}-{name}.png"
        path.write_bytes(png)
        print(path)
    if look.filtered_count:
        print("after filtering:", look.filtered_count)
    for e in look.errors:
        print("ERROR", e)
    return 1 if look.errors else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Open pages of the built book in headless Chromium and report what a reader would see.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: fd 3 in,
fd 4 out, NUL-separated JSON), so no driver binary, port or websocket library is needed.
"""

from __future__ import annotations

import base64
import fcntl
import functools
import http.server
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# Flags for a closed network: without the background-networking ones Chromium keeps trying to
# reach Google's hosts. --no-sandbox: we only open our own pages, and root (CI containers) needs it.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1280,900",
)

# Runs in the page once it has loaded: forces lazy images to load, waits (bounded) for every image
# to settle, then returns what the checks need.
PAGE_REPORT_JS = r"""
(async () => {
  const imgs = Array.from(document.images);
  for (const img of imgs) { if (img.loading === 'lazy') img.loading = 'eager'; }
  const settle = img => img.complete ? Promise.resolve() : new Promise(resolve => {
    img.addEventListener('load', resolve, {once: true});
    img.addEventListener('error', resolve, {once: true});
  });
  await Promise.race([Promise.all(imgs.map(settle)), new Promise(r => setTimeout(r, 10000))]);
  const mj = window.MathJax && window.MathJax.startup && window.MathJax.startup.promise;
  if (mj) await Promise.race([mj, new Promise(r => setTimeout(r, 15000))]);
  const visible = el => !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length);
  const article = document.querySelector('main') || document.body;
  // Visible prose text outside code, scripts and typeset math: where raw TeX would show.
  const skip = 'pre, code, script, style, textarea, mjx-container, .highlight';
  const walker = document.createTreeWalker(article, NodeFilter.SHOW_TEXT);
  const prose = [];
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement;
    if (el && !el.closest(skip) && visible(el)) prose.push(n.textContent);
  }
  const proseText = prose.join(' ');
  const rawTex = (proseText.match(/.{0,30}(\\\(|\\\[|\$\$|\\begin\{).{0,30}/g) || []);
  const text = article.innerText;
  const grab = re => Array.from(new Set((text.match(re) || [])
    .map(m => m.trim().replace(/^['"(=]/, '')))).slice(0, 10);
  const maths = Array.from(article.querySelectorAll('.math'));
  const report = {
    url: location.href,
    title: document.title,
    images: imgs.map(img => ({src: img.currentSrc || img.src, complete: img.complete,
                               natural_width: img.naturalWidth})),
    provenance: Array.from(document.querySelectorAll('.provenance')).map(el => {
      // "At the top": inside, or before, the first code cell other than the template's
      // `parameters` cell (its defaults may show above the block that says what actually ran).
      const first = document.querySelector('div.cell:not(.tag_parameters)');
      const atTop = !first || first.contains(el)
        || !!(el.compareDocumentPosition(first) & Node.DOCUMENT_POSITION_FOLLOWING);
      return {text: el.innerText.trim(), visible: visible(el), at_top: atTop};
    }),
    injected_parameters_visible: Array.from(
      document.querySelectorAll('.tag_injected-parameters')).filter(visible).length,
  };
  Object.assign(report, {
    raw_tex: rawTex,
    math_total: maths.length,
    math_typeset: maths.filter(el => el.querySelector('mjx-container')).length,
    machine_paths: grab(/(?:PosixPath|WindowsPath)\(|(?:^|[\s'"(=])\/(?:home|work|root|tmp|Users|usr|opt|mnt|var|content)\/\S+|[A-Z]:\\\S+/g),
    warnings: grab(/\b[A-Z]\w*Warning: .{0,60}|Kernel is running over TCP.{0,20}/g),
    tracebacks: grab(/Traceback \(most recent call last\).{0,40}|\b\w+Error: .{0,60}/g),
    stderr_outputs: Array.from(article.querySelectorAll('.output.stderr')).filter(visible).length,
    error_outputs: Array.from(article.querySelectorAll('.output.error, .output.traceback'))
      .filter(visible).length,
    page_width: document.documentElement.scrollWidth,
    window_width: window.innerWidth,
    data_numbers: article.querySelectorAll('abbr.num').length,
    pdf_links: Array.from(article.querySelectorAll('a[href$=".pdf"]')).map(a => a.href),
  });
  return JSON.stringify(report);
})()
"""


# True once the navigated document has loaded and will not redirect (the book's index.html does,
# with a meta refresh, to the root chapter).
SETTLED_JS = """
location.href !== 'about:blank' && document.readyState === 'complete'
  && !document.querySelector('meta[http-equiv="refresh" i]')
"""


class BrowserError(RuntimeError):
    """Chromium could not be started, or did not answer a DevTools command in time."""


@dataclass(frozen=True)
class ImageReport:
    """One <img> of a page: where it points and whether it decoded."""

    src: str
    complete: bool
    natural_width: int

    @property
    def loaded(self) -> bool:
        return self.complete and self.natural_width > 0


@dataclass(frozen=True)
class ProvenanceReport:
    """One element with class ``provenance``: its text, whether it shows, whether it leads."""

    text: str
    visible: bool
    at_top: bool


@dataclass(frozen=True)
class PageReport:
    """What a reader gets from one page: title, images, provenance blocks, timing."""

    url: str
    title: str
    images: list[ImageReport]
    provenance: list[ProvenanceReport]
    injected_parameters_visible: int
    failed_requests: list[str] = field(default_factory=list)  # same-origin URLs that failed
    seconds: float = 0.0
    external_requests: list[str] = field(default_factory=list)  # other hosts: none work offline
    raw_tex: list[str] = field(default_factory=list)  # visible prose still holding \( \[ $$
    math_total: int = 0  # elements Sphinx marked as math
    math_typeset: int = 0  # of those, how many MathJax rendered
    machine_paths: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    tracebacks: list[str] = field(default_factory=list)
    stderr_outputs: int = 0
    error_outputs: int = 0
    page_width: int = 0
    window_width: int = 0
    data_numbers: int = 0  # numbers quoted from the result tables ({num} role)
    pdf_links: list[str] = field(default_factory=list)

    @property
    def broken_images(self) -> list[str]:
        return [img.src for img in self.images if not img.loaded]


def find_chromium() -> str | None:
    """Path of a Chromium-family browser: $CHROMIUM if set, else the first known name on PATH."""
    if env := os.environ.get("CHROMIUM"):
        return env if shutil.which(env) else None
    for name in BROWSER_NAMES:
        if path := shutil.which(name):
            return path
    return None


INSTALL_ENV = "RL_CIRCUITRY_INSTALL_CHROMIUM"
APT_PACKAGES = ("chromium", "fonts-liberation")
INSTALL_COMMAND = f"sudo apt-get install -y {' '.join(APT_PACKAGES)}"


def _apt_install() -> str | None:
    """apt-get install Debian's chromium (asked for with $RL_CIRCUITRY_INSTALL_CHROMIUM=1, as root)."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *APT_PACKAGES]
    for cmd in (["apt-get", "update", "-qq"], install):
        if subprocess.run(cmd, env=env, capture_output=True, timeout=900, check=False).returncode:
            return None
    return find_chromium()


def chromium_or_reason() -> tuple[str | None, str]:
    """A browser to use, or None and why (naming the install command). System packages are
    installed only when $RL_CIRCUITRY_INSTALL_CHROMIUM=1 asks for it."""
    if (named := os.environ.get("CHROMIUM")) and find_chromium() is None:
        return None, f"$CHROMIUM={named} is not an executable browser"
    if exe := find_chromium():
        return exe, ""
    if os.environ.get(INSTALL_ENV) == "1" and (exe := _apt_install()):
        return exe, ""
    return None, (
        f"no headless Chromium: install one (`{INSTALL_COMMAND}`), point $CHROMIUM at a "
        f"Chrome/Chromium binary, or set {INSTALL_ENV}=1 to let this test install it as root"
    )


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """Ignore a browser hanging up mid-transfer; report anything else as usual."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextmanager
def serve_directory(root: Path) -> Iterator[str]:
    """Serve ``root`` over HTTP on a free 127.0.0.1 port from a thread; yields the base URL."""
    root = Path(root)
    if not (root / "index.html").is_file():
        raise FileNotFoundError(f"{root}/index.html is missing: build the book first (`make html`)")
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = _QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="book-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class Browser:
    """A headless Chromium driven over ``--remote-debugging-pipe``; use as a context manager."""

    def __init__(self, executable: str, timeout: float = 30.0) -> None:
        self.executable = executable
        self.timeout = timeout
        self._next_id = 0
        self._buffer = b""
        self._events: list[dict] = []

    def __enter__(self) -> Browser:
        self._profile = tempfile.TemporaryDirectory(prefix="sitecheck-profile-")
        self._log = tempfile.TemporaryFile()  # the browser's stderr, read back on failure
        to_browser_r, self._to_browser = _pipe_above(9)
        self._from_browser, from_browser_w = _pipe_above(9)
        # Chromium reads commands on fd 3 and writes replies on fd 4; bash moves our pipe ends
        # there (no preexec_fn: the HTTP server thread makes that unsafe).
        wire = (
            f'exec "$@" 3<&{to_browser_r} 4>&{from_browser_w} {to_browser_r}<&- {from_browser_w}>&-'
        )
        self._proc = subprocess.Popen(
            [
                "bash",
                "-c",
                wire,
                "bash",
                self.executable,
                *CHROMIUM_FLAGS,
                "--remote-debugging-pipe",
                f"--user-data-dir={self._profile.name}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            pass_fds=(to_browser_r, from_browser_w),
            start_new_session=True,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        return self

    def __exit__(self, *exc: object) -> None:
        with suppress(OSError):
            self._send("Browser.close", wait=False)
        with suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=10)
        _kill_group(self._proc)  # also helpers it left behind (crash handler, zygotes)
        self._log.close()
        os.close(self._to_browser)
        os.close(self._from_browser)
        self._profile.cleanup()

    def log_tail(self, chars: int = 2000) -> str:
        """The end of what the browser wrote to stderr so far."""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-chars:]

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"no DevTools message within {self.timeout:.0f} s")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise BrowserError(
                        f"Chromium exited (rc={self._proc.poll()}): {self.log_tail()}"
                    )
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def _send(
        self, method: str, params: dict | None = None, session: str | None = None, wait: bool = True
    ) -> dict:
        self._next_id += 1
        msg: dict = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_browser, json.dumps(msg).encode() + b"\0")
        if not wait:
            return {}
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self._events.append(reply)

    def _evaluate(self, expression: str, session: str) -> object:
        """Value of a JavaScript expression in the page (awaited if it is a promise)."""
        result = self._send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            session=session,
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def _wait_until_loaded(self, session: str, url: str) -> None:
        """Poll until the document has loaded and is not about to redirect (meta refresh)."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            try:
                if self._evaluate(SETTLED_JS, session):
                    return
            except BrowserError:  # the document went away mid-call: a navigation is under way
                pass
            time.sleep(0.05)
        raise BrowserError(f"{url} did not finish loading within {self.timeout:.0f} s")

    def inspect(self, url: str) -> PageReport:
        """Load ``url`` in a fresh tab, wait for its load event and images, and report on it."""
        start = time.perf_counter()
        target = self._send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self._send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        try:
            self._send("Network.enable", session=session)
            self._events.clear()
            nav = self._send("Page.navigate", {"url": url}, session=session)
            if nav.get("errorText"):
                raise BrowserError(f"{url}: {nav['errorText']}")
            self._wait_until_loaded(session, url)
            data = json.loads(self._evaluate(PAGE_REPORT_JS, session))
            failed = _same_origin_failures(self._events, session, url)
            external = _external_requests(self._events, session, url)
        finally:
            self._send("Target.closeTarget", {"targetId": target})
        return PageReport(
            url=data.pop("url"),
            title=data.pop("title"),
            images=[ImageReport(**img) for img in data.pop("images")],
            provenance=[ProvenanceReport(**p) for p in data.pop("provenance")],
            failed_requests=failed,
            external_requests=external,
            seconds=time.perf_counter() - start,
            **data,
        )

    def capture(
        self, url: str, path: Path, width: int = 1300, theme: str = "light", max_height: int = 6000
    ) -> Path:
        """Save a full-page PNG of ``url`` at ``width`` CSS pixels (top ``max_height`` px)."""
        target = self._send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self._send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        try:
            metrics = {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}
            self._send("Emulation.setDeviceMetricsOverride", metrics, session=session)
            self._send("Page.navigate", {"url": url}, session=session)
            self._wait_until_loaded(session, url)
            self._evaluate(f"document.documentElement.dataset.theme = {json.dumps(theme)}", session)
            self._evaluate(PAGE_REPORT_JS, session)  # images and MathJax settled
            height = min(
                int(self._evaluate("document.documentElement.scrollHeight", session)), max_height
            )
            # A viewport as tall as the shot: capturing beyond the viewport instead shifts pages
            # whose tables scroll sideways (Chromium re-lays them out at another width).
            tall = {**metrics, "height": height}
            self._send("Emulation.setDeviceMetricsOverride", tall, session=session)
            self._evaluate("window.scrollTo(0, 0)", session)
            clip = {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}
            shot = self._send(
                "Page.captureScreenshot", {"format": "png", "clip": clip}, session=session
            )
        finally:
            self._send("Target.closeTarget", {"targetId": target})
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


def _same_origin_failures(events: list[dict], session: str, page_url: str) -> list[str]:
    """URLs on the page's own origin whose request failed or answered 4xx/5xx.

    Requests to other hosts (fonts, MathJax from a CDN) are left out: they fail on a closed network
    and are not part of what the book ships.
    """
    origin = "/".join(page_url.split("/", 3)[:3]) + "/"
    urls: dict[str, str] = {}
    failed: list[str] = []
    for ev in events:
        if ev.get("sessionId") != session:
            continue
        params = ev["params"]
        if ev["method"] == "Network.requestWillBeSent":
            urls[params["requestId"]] = params["request"]["url"]
        elif ev["method"] == "Network.responseReceived" and params["response"]["status"] >= 400:
            failed.append(f"{params['response']['url']} ({params['response']['status']})")
        elif ev["method"] == "Network.loadingFailed" and not params.get("canceled"):
            failed.append(f"{urls.get(params['requestId'], '?')} ({params.get('errorText')})")
    favicon = origin + "favicon.ico "  # asked for by the browser itself, not by the page
    return [f for f in failed if f.startswith(origin) and not f.startswith(favicon)]


def _external_requests(events: list[dict], session: str, page_url: str) -> list[str]:
    """URLs on other hosts the page asked for (a CDN, fonts): the book must work offline."""
    origin = "/".join(page_url.split("/", 3)[:3]) + "/"
    urls = (
        ev["params"]["request"]["url"]
        for ev in events
        if ev.get("sessionId") == session and ev["method"] == "Network.requestWillBeSent"
    )
    return sorted(
        {u for u in urls if u.startswith(("http:", "https:")) and not u.startswith(origin)}
    )


def _pipe_above(low: int) -> tuple[int, int]:
    """An os.pipe() with both ends numbered above ``low``, so moving them to 3 and 4 is safe."""
    ends = []
    for fd in os.pipe():
        ends.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, low + 1))
        os.close(fd)
    return ends[0], ends[1]


def _kill_group(proc: subprocess.Popen) -> None:
    """End a browser we started and every process it forked (it runs in its own session)."""
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def screenshot(executable: str, url: str, path: Path, timeout: float = 60.0) -> Path:
    """Save a 1280x900 PNG of ``url`` with ``chromium --headless --screenshot``; returns ``path``.

    Give the final URL: the CLI screenshot waits forever on a page that redirects (the book's
    index.html does), so pass ``PageReport.url`` from :meth:`Browser.inspect` instead.
    """
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="sitecheck-profile-") as profile:
        args = [executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={path}"]
        proc = subprocess.Popen(
            [*args, url],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise BrowserError(f"screenshot of {url} took over {timeout:.0f} s") from exc
        finally:
            _kill_group(proc)
    if proc.returncode != 0 or not path.is_file():
        raise BrowserError(f"screenshot of {url} failed: {err.decode(errors='replace')[-2000:]}")
    return path

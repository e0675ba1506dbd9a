"""Load test: many browser sessions watch a live training run and classify uploads on one Streamlit server.

From the repository root, with the real CIFAR-10 in LENET_DATA and Debian's Chromium at /usr/bin/chromium:

    python -m tests.loadtest --sessions 30 --seconds 90 --json test-artifacts/load-30.json

The method:

1. Start `streamlit run app.py` on a free port of 127.0.0.1, with a fresh runs folder (LENET_RUNS) and the dataset
   in LENET_DATA, and note its memory while idle.
2. A driver page starts a training run through the Train page (so the run is the server's own, in its registry),
   waits for the run's first checkpoint, then visits every page once and classifies one upload: the dataset, the
   model and the test-set evaluation are now loaded. It closes, and the server's memory now is the baseline
   ("before sessions"); the training's speed over a few seconds with no page open is its speed alone.
3. N sessions start, evenly over the ramp-up: one headless Chromium, and per session a browser context (its
   own cookies and websocket, so its own Streamlit session) with one page. Each opens the app where a visitor
   lands (open: the Overview page, showing the run in progress), then goes round a loop through the sidebar, as
   a person would, until the time is up:
       train         the Train page, until the live progress line shows
       live update   the progress line redrawn by the page itself (its fragment, once a second)
       classify      the Classify page, ready for an upload
       upload        a generated photo (its own colour per session and loop) uploaded, until "It says:" shows
       <page>        one of Overview, Dataset, Model, Evaluate, in turn
   Each of these is one request. Its latency runs from the click (or the upload) until the page shows what it is
   for; it is an error when that times out, or the page then shows an exception, an error alert or a lost
   connection. No request starts once the time is up, except that a session completes its first loop (so every
   session makes every kind of request) within one more timeout: the test ends within --seconds plus two timeouts.
4. Meanwhile the server's resident memory (RSS of the process and its children, from /proc) is sampled every
   second, and the run's status.json (which the server rewrites about once a second) is read at the start and the
   end of the load: the steps it trained in between, and so its images per second under load. CPU time is counted
   too, per process: the server's, the load generator's (this script, Playwright and Chromium) and the rest of
   the machine's, so a slow figure says where the cores went.

It passes when there are no errors, every session completed a loop, the run trained during the load and is still
running (or finished), the server is alive, and its peak memory grew by less than --max-mb-per-session (50 MB)
per session over the baseline. Measured on 2 cores: 2 to 20 MB per session, most of it noise shared by all
sessions (some 50 to 100 MB: evaluations of new checkpoints, the training's and the threads' allocations), so the
fewer the sessions the higher the figure; Streamlit's own share per session (its state, the uploaded photo, the
images and charts sent) is a few MB. The bound is 2.5 times the worst measured and a third of the training split
(154 MB of uint8): a dataset loaded per session instead of once per server fails it at any number of sessions.
(A model is 0.25 MB: memory cannot tell whether it is shared; the st.cache_resource loaders make sure.)
"""

import argparse
import asyncio
import colorsys
import io
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run",
                 "--disable-dev-shm-usage"]
VIEWPORT = {"width": 1280, "height": 900}

LIVE = re.compile(r"step [\d,]+ of [\d,]+ · [\d,]+ images/s")  # the Train page's progress line while a run trains
# JavaScript: true once a live progress line on the page differs from `first`.
REDRAWN = """first => [...document.querySelectorAll('[data-testid="stProgress"]')]
    .some(e => e.innerText !== first && / images\\/s/.test(e.innerText))"""
UPLOADER = '[data-testid="stFileUploaderDropzoneInput"]'
UPLOAD_LABEL = "A photo (JPEG, PNG, WebP, BMP or GIF)"
ANSWER = "It says:"
# The other pages, each with what shows once it is drawn (a heading near its end, or the live status).
OTHER_PAGES = {
    "Overview": re.compile(r"^epoch \d+ of \d+$"),  # the "Right now" panel, showing the run in progress
    "Dataset": "Before and after normalization",
    "Model": "What the first layer learned",
    "Evaluate": "Test images and what the network said",
}
GOOD_RUN_STATES = ("running", "finished")
# Every kind of request a session makes in its loop.
REQUEST_KINDS = {"open", "train", "live update", "classify", "upload"} | {name.lower() for name in OTHER_PAGES}


# -- the server ------------------------------------------------------------------------------------


@dataclass
class Server:
    url: str
    pid: int
    runs_dir: Path
    log: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def streamlit_server(workdir: Path, data_dir: Path, start_timeout: float = 90, env: dict | None = None) -> Iterator[Server]:
    """`streamlit run app.py` on a free port of 127.0.0.1 with its own runs folder, until the block ends."""
    port, runs_dir, log_path = free_port(), workdir / "runs", workdir / "streamlit.log"
    env = {**os.environ, "LENET_DATA": str(data_dir), "LENET_RUNS": str(runs_dir), **(env or {})}
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
               "--server.address", "127.0.0.1", "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false"]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        server = Server(f"http://127.0.0.1:{port}", process.pid, runs_dir, log_path)
        try:
            wait_healthy(server, process, start_timeout)
            yield server
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_healthy(server: Server, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{server.url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"streamlit did not start:\n{server.log.read_text()[-2000:]}")
        time.sleep(0.3)


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and "zombie" not in _proc_field(pid, "State").lower()


def _proc_field(pid: int, name: str, file: str = "status") -> str:
    try:
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(name + ":"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def descendants(pid: int) -> list[int]:
    """The process's children, their children, and so on (from /proc/<pid>/task/*/children)."""
    found = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            for child in map(int, children.read_text().split()):
                found += [child, *descendants(child)]
        except OSError:
            continue
    return found


def rss_mb(pids: list[int]) -> float:
    """Resident memory of these processes together, in MB (10^6 bytes)."""
    return _summed_mb(pids, "VmRSS", "status")


def pss_mb(pids: list[int]) -> float:
    """Proportional memory of these processes together, in MB: each shared page divided among the processes that map it.
    RSS counts torch's libraries and the memory-mapped dataset once in the server and again in its training process;
    summed over every process of the machine, PSS is the memory they take."""
    return _summed_mb(pids, "Pss", "smaps_rollup")


def _summed_mb(pids: list[int], name: str, file: str) -> float:
    kilobytes = 0
    for pid in pids:
        value = _proc_field(pid, name, file)  # "123456 kB"
        kilobytes += int(value.split()[0]) if value else 0
    return kilobytes * 1024 / 1e6


def cpu_ticks(pid: int) -> int:
    """User plus system CPU time of a process (all its threads), in clock ticks."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0
    return int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of proc(5)


def machine_busy_ticks() -> int:
    """CPU time all cores of the machine spent on anything but idling, in clock ticks (from /proc/stat)."""
    user, nice, system, idle, iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return user + nice + system + irq + softirq + steal


class Sampler:
    """Every second: the server's memory (RSS of it and its children), and the CPU time of the server, of the load
    generator (this process, Playwright's driver and Chromium: every other descendant of this process) and of the
    whole machine. CPU is counted per process, so processes that end (closed pages) keep what they used."""

    def __init__(self, server_pid: int):
        self.server_pid = server_pid
        self.rss: list[float] = []
        self.ticks: dict[str, dict[int, int]] = {"server": {}, "load generator": {}}
        self.machine = machine_busy_ticks()
        self.started = time.monotonic()

    def server_pids(self) -> list[int]:
        return [self.server_pid, *descendants(self.server_pid)]

    def sample(self) -> None:
        server = self.server_pids()
        generator = [os.getpid(), *(pid for pid in descendants(os.getpid()) if pid not in server)]
        self.rss.append(rss_mb(server))
        for group, pids in (("server", server), ("load generator", generator)):
            for pid in pids:
                self.ticks[group][pid] = max(self.ticks[group].get(pid, 0), cpu_ticks(pid))

    def start(self) -> None:
        """Count CPU from now on."""
        self.sample()
        self.baseline = {group: dict(ticks) for group, ticks in self.ticks.items()}
        self.machine, self.started = machine_busy_ticks(), time.monotonic()

    def cores(self) -> dict[str, float]:
        """CPU used since start(), as busy cores on average: server, load generator, other (the rest of the machine)."""
        tick, wall = os.sysconf("SC_CLK_TCK"), time.monotonic() - self.started
        used = {group: sum(t - self.baseline[group].get(pid, 0) for pid, t in ticks.items()) / tick / wall
                for group, ticks in self.ticks.items()}
        machine = (machine_busy_ticks() - self.machine) / tick / wall
        return {**{group: round(value, 2) for group, value in used.items()}, "other": round(max(0.0, machine - sum(used.values())), 2)}

    async def run(self, stop: asyncio.Event, every: float = 1.0) -> None:
        while not stop.is_set():
            self.sample()
            try:
                await asyncio.wait_for(stop.wait(), every)
            except TimeoutError:
                pass


# -- the training run, as the server writes it down --------------------------------------------------


@dataclass
class RunProgress:
    run_id: str
    state: str
    step: int
    batch_size: int
    updated: float  # time.time() of the server's last write


def run_progress(runs_dir: Path) -> RunProgress | None:
    """The newest run's state and step from its status.json; None when there is no run (yet)."""
    folders = sorted(runs_dir.glob("*/status.json")) if runs_dir.is_dir() else []
    if not folders:
        return None
    folder = folders[-1].parent
    try:
        status = json.loads((folder / "status.json").read_text())
        config = json.loads((folder / "config.json").read_text())["config"]
    except (OSError, ValueError, KeyError):
        return None
    return RunProgress(folder.name, status.get("state", "?"), status.get("progress", {}).get("step", 0), config["batch_size"],
                       status.get("updated", time.time()))


def images_per_second(start: RunProgress | None, end: RunProgress | None) -> float:
    if start is None or end is None or end.updated <= start.updated:
        return 0.0
    return (end.step - start.step) * end.batch_size / (end.updated - start.updated)


async def wait_for_checkpoint(runs_dir: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not list(runs_dir.glob("*/checkpoint.pt")):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the run wrote no checkpoint within {timeout:.0f} s")
        await asyncio.sleep(0.5)


# -- one page in the browser ---------------------------------------------------------------------------


@dataclass
class Request:
    session: int
    kind: str
    seconds: float
    error: str | None = None


def photo(session: int, loop: int) -> bytes:
    """A 480 x 320 PNG: a ball on a sky, its colour different for every session and loop."""
    hue = (session * 0.618 + loop * 0.1) % 1.0
    color = tuple(round(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.8, 0.9))
    image = Image.new("RGB", (480, 320), "skyblue")
    ImageDraw.Draw(image).ellipse((140 + loop % 5 * 10, 60, 340, 260), fill=color)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


async def page_error(page) -> str | None:
    """What is wrong on the page now (an exception, an error alert, a lost connection), or None."""
    exceptions = await page.locator('[data-testid="stException"]').all_inner_texts()
    if exceptions:
        return "exception: " + " ".join(exceptions[0].split())[:300]
    alerts = await page.locator('[data-testid="stAlertContentError"]').all_inner_texts()
    if alerts:
        return "error alert: " + " ".join(alerts[0].split())[:300]
    connection = await page.locator('[data-testid="stApp"]').get_attribute("data-test-connection-state")
    if connection != "CONNECTED":
        return f"connection {connection}"
    return None


async def timed(page, session: int, kind: str, action: Callable[[], Awaitable[None]], timeout: float) -> Request:
    """Run one request and time it: until the action returns (at most `timeout` seconds), then look for errors on the page."""
    from playwright.async_api import Error as PlaywrightError
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    start = time.monotonic()
    try:
        await asyncio.wait_for(action(), timeout)
    except (PlaywrightTimeout, TimeoutError):
        return Request(session, kind, time.monotonic() - start, "timeout")
    except PlaywrightError as error:
        return Request(session, kind, time.monotonic() - start, f"browser: {str(error).splitlines()[0][:300]}")
    seconds = time.monotonic() - start
    try:
        return Request(session, kind, seconds, await page_error(page))
    except PlaywrightError as error:
        return Request(session, kind, seconds, f"browser: {str(error).splitlines()[0][:300]}")


def ready(page, what: str | re.Pattern):
    """The locator of what shows once a page is drawn: a heading, or a text matching a pattern."""
    if isinstance(what, re.Pattern):
        return page.get_by_text(what).first
    return page.get_by_role("heading", name=what).first


async def navigate(page, title: str, shown) -> None:
    """Click the page's link in the sidebar (same session, no reload), and wait until `shown` is visible."""
    await page.locator('[data-testid="stSidebarNavLink"]').filter(has=page.get_by_text(title, exact=True)).click()
    await shown.wait_for()


async def open_app(page, url: str) -> None:
    """Open the app where a visitor lands, the Overview page, and wait until it shows the run in progress."""
    await page.goto(url)
    await ready(page, OTHER_PAGES["Overview"]).wait_for()


async def live_update(page) -> None:
    """Wait until the Train page redraws the live progress line by itself (the fragment, once a second)."""
    progress = page.get_by_text(LIVE).first
    first = await progress.inner_text()
    await page.wait_for_function(REDRAWN, arg=first, polling=250)


async def upload(page, image: bytes, name: str) -> None:
    """Upload a photo on the Classify page and wait for the network's answer."""
    await page.get_by_text(ANSWER).first.wait_for(state="detached")  # nothing left over from an earlier visit
    await page.locator(UPLOADER).set_input_files(files=[{"name": name, "mimeType": "image/png", "buffer": image}])
    await page.get_by_text(ANSWER).first.wait_for()


def loop_steps(page, session: int, loop: int) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
    """One loop of a session: (kind, action) in order."""
    other = list(OTHER_PAGES)[(session + loop) % len(OTHER_PAGES)]
    return [
        ("train", lambda: navigate(page, "Train", page.get_by_text(LIVE).first)),
        ("live update", lambda: live_update(page)),
        ("classify", lambda: navigate(page, "Classify", page.get_by_text(UPLOAD_LABEL).first)),
        ("upload", lambda: upload(page, photo(session, loop), f"session{session}-loop{loop}.png")),
        (other.lower(), lambda: navigate(page, other, ready(page, OTHER_PAGES[other]))),
    ]


# -- sessions ----------------------------------------------------------------------------------------


@dataclass
class SessionResult:
    session: int
    loops: int = 0  # loops completed (every request made, with or without errors)
    requests: list[Request] = field(default_factory=list)


async def run_session(browser, url: str, result: SessionResult, deadline: float, timeout_ms: int) -> SessionResult:
    """One browser session: open the app, then go round the loop until the deadline; the first loop may go on one
    timeout longer."""
    session, hard_stop = result.session, deadline + timeout_ms / 1000
    context = await browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(timeout_ms)
    try:
        page = await context.new_page()
        result.requests.append(await timed(page, session, "open", lambda: open_app(page, url), timeout_ms / 1000))
        while True:
            for kind, action in loop_steps(page, session, result.loops):
                now = time.monotonic()
                if now > hard_stop or (result.loops and now > deadline):
                    return result
                result.requests.append(await timed(page, session, kind, action, timeout_ms / 1000))
            result.loops += 1
    finally:
        await context.close()


async def warm_up(browser, server: Server, train_images: int, epochs: int, timeout_ms: int) -> None:
    """Start the run through the Train page; once it has a checkpoint, visit every page and classify one photo."""
    context = await browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(timeout_ms)
    page = await context.new_page()
    try:
        await page.goto(f"{server.url}/train")
        await page.get_by_role("button", name="Start training").wait_for()
        await page.get_by_role("spinbutton", name="Training images").fill(str(train_images))
        await page.get_by_role("spinbutton", name="Epochs").fill(str(epochs))
        await page.get_by_role("spinbutton", name="Epochs").press("Tab")
        await page.get_by_role("button", name="Start training").click()
        # A run estimated over 5 minutes asks first, as it asks a teacher: confirm it.
        live, confirm = page.get_by_text(LIVE).first, page.get_by_role("button", name="Start anyway")
        await live.or_(confirm).wait_for(timeout=max(timeout_ms, 240_000))  # the server may decode CIFAR-10 first
        if await confirm.count():
            await confirm.click()
        await live.wait_for(timeout=max(timeout_ms, 240_000))
        await wait_for_checkpoint(server.runs_dir, timeout=max(timeout_ms / 1000, 240))
        steps = loop_steps(page, 0, 0)[2:4]  # classify, upload
        steps += [(title, lambda title=title: navigate(page, title, ready(page, OTHER_PAGES[title]))) for title in OTHER_PAGES]
        for kind, action in steps:
            request = await timed(page, -1, kind, action, timeout_ms / 1000)
            if request.error:
                raise RuntimeError(f"warm-up {kind}: {request.error}")
    finally:
        await context.close()


# -- the whole test --------------------------------------------------------------------------------------


@dataclass
class Report:
    sessions: int
    load_seconds: float  # from the first session's start to the last one's end
    requests: int
    errors: int
    loops_min: int  # fewest loops completed by one session
    loops_total: int
    median_s: float
    p95_s: float
    slowest_s: float
    slowest_kind: str
    rss_idle_mb: float  # the server just started, nothing loaded
    rss_before_mb: float  # warm: dataset, run, model and evaluation loaded; no session open
    rss_peak_mb: float  # during the load
    rss_after_mb: float  # a few seconds after every session closed
    mb_per_session: float  # (peak - before) / sessions
    run_state: str
    training_steps: int  # trained during the load
    images_per_second: float  # the training's, during the load
    images_per_second_alone: float  # the training's, just before, no page open
    cpu_cores: int  # of the machine
    cpu_used: dict  # busy cores on average during the load: server, load generator, other
    server_alive: bool
    pss_before_mb: float = 0.0  # warm, as rss_before_mb, with shared pages counted once (pss_mb)
    by_kind: dict = field(default_factory=dict)  # kind -> count, errors, median_s, max_s
    error_samples: list = field(default_factory=list)


def summarize(requests: list[Request]) -> dict:
    by_kind = {}
    for kind in dict.fromkeys(r.kind for r in requests):
        times = [r.seconds for r in requests if r.kind == kind]
        by_kind[kind] = {"count": len(times), "errors": sum(1 for r in requests if r.kind == kind and r.error),
                         "median_s": round(statistics.median(times), 2), "max_s": round(max(times), 2)}
    return by_kind


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))] if ordered else 0.0


async def load_test(server: Server, sessions: int, seconds: float, ramp: float, timeout_s: float, train_images: int,
                    epochs: int, log: Callable[[str], None]) -> Report:
    from playwright.async_api import async_playwright

    timeout_ms = round(timeout_s * 1000)
    sampler = Sampler(server.pid)
    rss_idle = rss_mb(sampler.server_pids())
    results = [SessionResult(i) for i in range(sessions)]
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            log("starting a training run through the Train page, then warming every page up")
            await warm_up(browser, server, train_images, epochs, timeout_ms)
            alone_start = run_progress(server.runs_dir)
            await asyncio.sleep(6)
            before = run_progress(server.runs_dir)
            rss_before, pss_before = rss_mb(sampler.server_pids()), pss_mb(sampler.server_pids())

            log(f"{sessions} sessions for {seconds:.0f} s (ramp-up {ramp:.0f} s, {timeout_s:.0f} s timeout per request)")
            stop = asyncio.Event()
            sampler.start()
            sampling = asyncio.create_task(sampler.run(stop))
            reporting = asyncio.create_task(report_progress(results, sampler, stop, log))
            deadline = time.monotonic() + seconds
            await asyncio.gather(*(staggered(i * ramp / sessions, run_session(browser, server.url, result, deadline, timeout_ms))
                                   for i, result in enumerate(results)))
            load_seconds = time.monotonic() - sampler.started
            cores = sampler.cores()
            after = run_progress(server.runs_dir)
            await asyncio.sleep(5)
            stop.set()
            await asyncio.gather(sampling, reporting)
        finally:
            await browser.close()
    rss_after = rss_mb(sampler.server_pids()) if alive(server.pid) else 0.0

    requests = [r for result in results for r in result.requests]
    slowest = max(requests, key=lambda r: r.seconds)
    peak = max([rss_before, *sampler.rss])
    return Report(
        sessions=sessions, load_seconds=round(load_seconds, 1), requests=len(requests), errors=sum(1 for r in requests if r.error),
        loops_min=min(r.loops for r in results), loops_total=sum(r.loops for r in results),
        median_s=round(statistics.median(r.seconds for r in requests), 2), p95_s=round(percentile([r.seconds for r in requests], 0.95), 2),
        slowest_s=round(slowest.seconds, 2), slowest_kind=slowest.kind,
        rss_idle_mb=round(rss_idle), rss_before_mb=round(rss_before), rss_peak_mb=round(peak), rss_after_mb=round(rss_after),
        pss_before_mb=round(pss_before), mb_per_session=round((peak - rss_before) / sessions, 1),
        run_state=after.state if after else "none", training_steps=(after.step - before.step) if after and before else 0,
        images_per_second=round(images_per_second(before, after)), images_per_second_alone=round(images_per_second(alone_start, before)),
        cpu_cores=os.cpu_count() or 0, cpu_used=cores, server_alive=alive(server.pid), by_kind=summarize(requests),
        error_samples=[f"session {r.session} {r.kind}: {r.error}" for r in requests if r.error][:20],
    )


async def report_progress(results: list["SessionResult"], sampler: Sampler, stop: asyncio.Event, log: Callable[[str], None],
                          every: float = 15.0) -> None:
    """A line every `every` seconds while the load runs: requests so far, errors, the server's memory."""
    while True:
        try:
            await asyncio.wait_for(stop.wait(), every)
            return
        except TimeoutError:
            pass
        requests = [r for result in results for r in result.requests]
        log(f"  {time.monotonic() - sampler.started:4.0f} s: {len(requests)} requests, {sum(1 for r in requests if r.error)} errors, "
            f"{sum(r.loops for r in results)} loops, server RSS {sampler.rss[-1]:,.0f} MB")


async def staggered(delay: float, coroutine: Awaitable[SessionResult]) -> SessionResult:
    await asyncio.sleep(delay)
    return await coroutine


def run_load_test(data_dir: Path, sessions: int = 30, seconds: float = 90, ramp: float | None = None, timeout_s: float = 120,
                  train_images: int = 10_000, epochs: int = 200, workdir: Path | None = None,
                  log: Callable[[str], None] = print) -> Report:
    """Start a server, load it with `sessions` browser sessions for `seconds`, and report what happened.

    The server's log and runs folder go to workdir, else to a temporary folder removed at the end."""
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="lenet-load-") as tmp:
            return run_load_test(data_dir, sessions, seconds, ramp, timeout_s, train_images, epochs, Path(tmp), log)
    workdir.mkdir(parents=True, exist_ok=True)
    ramp = seconds / 3 if ramp is None else ramp
    with streamlit_server(workdir, data_dir) as server:
        log(f"server {server.url} (pid {server.pid}), log in {server.log}")
        return asyncio.run(load_test(server, sessions, seconds, ramp, timeout_s, train_images, epochs, log))


def problems(report: Report, max_mb_per_session: float) -> list[str]:
    """Why the load test fails: an empty list when it passes."""
    found = []
    if report.errors:
        found.append(f"{report.errors} of {report.requests} requests failed, e.g. {report.error_samples[:3]}")
    if report.loops_min < 1:
        found.append("a session did not complete one loop")
    if report.training_steps <= 0:
        found.append("the training did not advance during the load")
    if report.run_state not in GOOD_RUN_STATES:
        found.append(f"the run is {report.run_state}, not running or finished")
    if not report.server_alive:
        found.append("the server died")
    if report.mb_per_session > max_mb_per_session:
        found.append(f"memory grew by {report.mb_per_session} MB per session (bound {max_mb_per_session} MB)")
    return found


def table(report: Report) -> str:
    """The figures as a Markdown table, then the requests by kind."""
    slowdown = f"{report.images_per_second:,} (alone, just before: {report.images_per_second_alone:,})"
    rows = [
        ("Browser sessions", f"{report.sessions} (headless Chromium pages, one Streamlit session each)"),
        ("Load duration", f"{report.load_seconds:.0f} s"),
        ("Requests", f"{report.requests:,} ({report.loops_total} loops; fewest loops by one session: {report.loops_min})"),
        ("Errors", f"{report.errors}"),
        ("Latency, median / 95th percentile", f"{report.median_s:.1f} s / {report.p95_s:.1f} s"),
        ("Slowest request", f"{report.slowest_s:.1f} s ({report.slowest_kind})"),
        ("Server memory (RSS), idle / warm before sessions", f"{report.rss_idle_mb:,.0f} MB / {report.rss_before_mb:,.0f} MB"),
        ("Server memory (PSS: shared pages counted once), warm before sessions", f"{report.pss_before_mb:,.0f} MB"),
        ("Server memory (RSS), peak under load", f"{report.rss_peak_mb:,.0f} MB (+{report.mb_per_session} MB per session)"),
        ("Server memory (RSS), 5 s after the sessions closed", f"{report.rss_after_mb:,.0f} MB"),
        ("Training during the load", f"{report.training_steps:,} steps, run {report.run_state}"),
        ("Training images/s during the load", slowdown),
        (f"CPU during the load (busy cores of {report.cpu_cores})", ", ".join(f"{k} {v:.2f}" for k, v in report.cpu_used.items())),
    ]
    lines = ["| | |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows), "",
             "| Request | Count | Errors | Median | Slowest |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {kind} | {s['count']} | {s['errors']} | {s['median_s']:.1f} s | {s['max_s']:.1f} s |"
              for kind, s in report.by_kind.items()]
    return "\n".join(lines)


def load_test_arguments(description: str, kind: str) -> argparse.ArgumentParser:
    """The options both load tests take (this one with browsers, tools/wsload over the websocket)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--sessions", type=int, default=30, help=f"{kind} sessions at once (default 30)")
    parser.add_argument("--seconds", type=float, default=90, help="how long the sessions go on (default 90)")
    parser.add_argument("--ramp", type=float, default=None, help="seconds over which the sessions start (default: a third of --seconds)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds one request may take before it is an error (default 120)")
    parser.add_argument("--max-mb-per-session", type=float, default=50, help="memory bound: peak growth over the baseline per session")
    parser.add_argument("--train-images", type=int, default=10_000, help="the run's training images per epoch (default 10,000)")
    parser.add_argument("--epochs", type=int, default=200, help="the run's epochs: enough that it outlasts the test")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("LENET_DATA") or REPO / "data"),
                        help="the CIFAR-10 folder (default: LENET_DATA, else ./data)")
    parser.add_argument("--json", type=Path, help="also write the report here as JSON")
    parser.add_argument("--workdir", type=Path, help="keep the server's log and runs folder here (default: a temporary folder)")
    return parser


def keep(report: Report, table_text: str, json_path: Path | None) -> None:
    """Print the table, and write the report as JSON when asked."""
    print(table_text)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(asdict(report), indent=1) + "\n")


def report_and_verdict(report: Report, table_text: str, json_path: Path | None, max_mb_per_session: float) -> int:
    """Print the table, write the JSON when asked, and return the exit status: 1 when the test failed."""
    keep(report, table_text, json_path)
    found = problems(report, max_mb_per_session)
    for problem in found:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if found else 0


def main(argv: list[str] | None = None) -> int:
    parser = load_test_arguments(__doc__.split("\n\n")[0], "browser")
    args = parser.parse_args(argv)
    if not CHROMIUM.exists():
        parser.error(f"{CHROMIUM} is missing: install Debian's chromium")

    report = run_load_test(args.data, args.sessions, args.seconds, args.ramp, args.timeout, args.train_images, args.epochs, args.workdir)
    return report_and_verdict(report, table(report), args.json, args.max_mb_per_session)


if __name__ == "__main__":
    sys.exit(main())

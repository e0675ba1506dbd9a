"""Load test over Streamlit's own protocol: many sessions watch a live training run and classify uploads on one server.

From the repository root, with the real CIFAR-10 in LENET_DATA:

    python -m tools.wsload --sessions 30 --seconds 90 --json test-artifacts/ws-30.json

It speaks the protocol of the Streamlit versions in SPOKEN_STREAMLIT (tools/wsload/README.md says how to extend it);
on any other version it refuses to run, so tests/test_wsload.py fails loudly instead of measuring nonsense.

tests/loadtest.py drives real Chromium pages; on 2 cores 30 of them use up the CPU themselves and time out before
the server is tested. This load generator plays the browser's part itself: per session one websocket speaking
Streamlit's protocol (its protobufs, BackMsg up and ForwardMsg down) and the few HTTP requests a browser makes, all
in one asyncio loop, so a session costs the load generator little and the figures measure the server. The test
(server, warm-up, the loop of requests, memory and CPU sampling, the report and the pass criteria) is the one
tests/loadtest.py describes, whose helpers it reuses.

What a session does, as Streamlit's frontend (1.67) does it:

- Opening the app: GET the page, then the frontend's pings GET /_stcore/health (which sets the _streamlit_xsrf
  cookie) and /_stcore/host-config, then the websocket /_stcore/stream with the subprotocols
  ["streamlit", <the XSRF cookie's value>], the cookie and an Origin header (XSRF protection stays on, as in
  production), and a rerun_script BackMsg for the page in the URL.
- Every rerun_script carries what the frontend sends: the page (its script hash once known, else the name from the
  URL), the values of all widgets shown, the hashes of the messages it has cached, the context (timezone, locale,
  URL, colour scheme), and for a fragment's rerun its id and whether a timer asked for it.
- The message cache: ForwardMsgs the server marks cacheable are kept by hash and announced in every rerun, so the
  server sends a ref_hash instead of a message the session already has; entries expire after
  max_cached_message_age finished script runs, counted as the frontend counts them.
- What is shown: the elements by delta path, with the script run, fragment and script that drew them. A full run of
  another page clears the page's elements; a finished run drops the elements it did not draw again (for a
  fragment's run, only that fragment's). Requests wait for what the page shows, as a person waits for the text.
- Widgets: every widget drawn puts its value in the widget states (its default, or the value the script set);
  widgets no longer shown leave them; a click is a trigger value sent once; a form's values go with its submit.
- Live updates: an auto_rerun ForwardMsg (interval, fragment id) starts a timer sending that fragment's rerun with
  is_auto_rerun every interval, whether the last one has finished or not, as the frontend's setInterval does; it
  stops on stop_auto_rerun, on a full run and on leaving the page. These reruns are most of a watching class's load.
- Navigation: the sidebar link sends a rerun for the page's script hash (from the navigation ForwardMsg) with the
  values of the widgets outside the page, after stopping the page's timers.
- Uploads: file_urls_request, file_urls_response, an HTTP PUT of the file (multipart, named as the browser names
  it, with the X-Xsrftoken header and the cookie), then a rerun with the file uploader's uploaded_file_info.
- Images: every media URL in an image element is fetched once per session, as the browser loads an <img>.

Not emulated: the static JavaScript and CSS (a browser caches them; loading the page once costs the server a few MB
of file serving), drawing (Vega charts, dataframes: no server work), the heartbeat BackMsg (sent only when a host
page asks for it), lazy dataframe chunks (the app's tables are small enough to come whole), and reconnecting after
a lost connection (here a lost connection is an error).

Errors, as in tests/loadtest.py: a request that times out (the message says how long the server had been silent
towards the session), an Exception element or an error alert drawn while it ran, a page not found, a websocket the
server closed, a failed HTTP request, an image of the page the user is on that cannot be fetched.

--live-updates N makes a session watch N redraws per visit of the Train page (a class watching the run rather than
clicking on); --server-env NAME=VALUE tries a Streamlit option on the server (STREAMLIT_<SECTION>_<OPTION>).

Measured on 2 cores: Streamlit's runner.postScriptGC (on by default) runs a full gc.collect() after every script run,
fragment runs included: 0.1 s or more with the GIL held once torch is loaded. With it the server managed 2 to 5 script
runs a second; 30 sessions waited 8 s for a median request, and with 60 a quarter of the requests timed out, the server
silent towards the session for 2 minutes. The app's .streamlit/config.toml turns it off: some 45 runs a second, and 60
sessions got every answer within 4 s. --server-env STREAMLIT_RUNNER_POST_SCRIPT_GC=true measures Streamlit's default.
"""

import asyncio
import os
import statistics
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import streamlit
from streamlit.proto.Alert_pb2 import Alert
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ClientState_pb2 import ClientState
from streamlit.proto.Common_pb2 import FileURLsRequest, UploadedFileInfo
from streamlit.proto.Element_pb2 import Element
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.NumberInput_pb2 import NumberInput
from streamlit.proto.Slider_pb2 import Slider
from streamlit.proto.WidgetStates_pb2 import WidgetState, WidgetStates
from streamlit.web.server.starlette.starlette_server_config import XSRF_COOKIE_NAME
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from tests import loadtest
from tests.loadtest import (
    ANSWER,
    LIVE,
    OTHER_PAGES,
    UPLOAD_LABEL,
    Report,
    Request,
    Sampler,
    Server,
    SessionResult,
    alive,
    images_per_second,
    load_test_arguments,
    percentile,
    photo,
    pss_mb,
    report_and_verdict,
    report_progress,
    rss_mb,
    run_progress,
    staggered,
    streamlit_server,
    summarize,
    wait_for_checkpoint,
)

# The Streamlit versions whose frontend this module imitates (message cache, widget states, fragment timers, uploads).
SPOKEN_STREAMLIT = ("1.67.",)


class UnsupportedStreamlit(RuntimeError):
    """The installed Streamlit is not one whose protocol this load generator was checked against."""


def check_streamlit_version(version: str = streamlit.__version__) -> None:
    if not version.startswith(SPOKEN_STREAMLIT):
        raise UnsupportedStreamlit(
            f"tools/wsload speaks the protocol of Streamlit {', '.join(v.rstrip('.') for v in SPOKEN_STREAMLIT)}, not {version}: "
            "check its frontend's BackMsg/ForwardMsg handling against tools/wsload/README.md, then add the version to SPOKEN_STREAMLIT"
        )

# The browser's context in every rerun (ClientState.context_info).
CONTEXT = {"timezone": "UTC", "timezone_offset": 0, "locale": "en-US", "is_embedded": False, "color_scheme": "light"}
NO_TOKEN = "PLACEHOLDER_AUTH_TOKEN"  # what the frontend offers when it has no XSRF cookie
ERROR_CHARS = 300
FINISHED = ForwardMsg.ScriptFinishedStatus
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the server is on 127.0.0.1, whatever the environment says


class ClientError(Exception):
    """What the emulated browser could not do; the message says what."""


class ConnectionLost(ClientError):
    """The websocket closed: the browser would show "Connecting..." and the session's state is gone."""


# -- what the frontend keeps: its message cache, the elements shown, the widgets' values -----------------------


@dataclass
class CachedMessage:
    raw: bytes
    run_count: int  # the run count when it last came or was referred to
    fragment_id: str


class MessageCache:
    """The frontend's ForwardMsg cache: cacheable messages by hash, announced in each rerun so the server sends a
    reference instead; an entry expires after max_cached_message_age finished runs (a fragment's run ages only that
    fragment's entries)."""

    def __init__(self):
        self.entries: dict[str, CachedMessage] = {}
        self.run_count = 0
        self.references = 0  # messages the server sent as a ref_hash

    def receive(self, raw: bytes) -> ForwardMsg:
        """The message as the frontend handles it: a reference replaced by the cached message, with the reference's metadata."""
        msg = ForwardMsg.FromString(raw)
        if msg.WhichOneof("type") == "ref_hash":
            return self._dereference(msg)
        if msg.metadata.cacheable and msg.hash:
            self._remember(msg, raw)
        return msg

    def _dereference(self, reference: ForwardMsg) -> ForwardMsg:
        entry = self.entries.get(reference.ref_hash)
        if entry is None:
            raise ClientError(f"the server referred to a message this session has not cached: {reference.ref_hash}")
        entry.run_count = self.run_count
        self.references += 1
        msg = ForwardMsg.FromString(entry.raw)
        msg.metadata.CopyFrom(reference.metadata)
        return msg

    def _remember(self, msg: ForwardMsg, raw: bytes) -> None:
        if msg.hash in self.entries:
            self.entries[msg.hash].run_count = self.run_count
        else:
            fragment_id = msg.delta.fragment_id if msg.HasField("delta") else ""
            self.entries[msg.hash] = CachedMessage(raw, self.run_count, fragment_id)

    def hashes(self) -> list[str]:
        return list(self.entries)

    def run_finished(self, max_age: int, fragment_ids: list[str]) -> None:
        self.run_count += 1
        for key, entry in list(self.entries.items()):
            if fragment_ids and entry.fragment_id not in fragment_ids:
                continue  # a fragment's run ages only its own messages
            if self.run_count - entry.run_count > max_age:
                del self.entries[key]


@dataclass
class Node:
    """One element or block on the page, and who drew it."""

    element: Element | None  # None for a block (a container, column, form, expander...)
    fragment_id: str
    run_id: str  # the script run that drew it
    script_hash: str  # the script that drew it: app.py (the main script) or a page's script
    seq: int  # the number of the message that drew it, to tell what is new from what was left over


def element_kind(element: Element) -> str:
    return element.WhichOneof("type") or ""


def element_texts(element: Element) -> list[str]:
    """The element's visible strings: a heading's or markdown's body, a progress bar's text, a metric's label and value..."""
    inner = getattr(element, element_kind(element), None)
    if inner is None:
        return []
    fields = inner.DESCRIPTOR.fields_by_name
    names = [name for name in ("body", "text", "label", "message") if name in fields]
    return [value for value in (getattr(inner, name) for name in names) if isinstance(value, str)]


def widget_id(element: Element) -> str:
    inner = getattr(element, element_kind(element), None)
    return inner.id if inner is not None and "id" in inner.DESCRIPTOR.fields_by_name else ""


class PageView:
    """The page as the frontend holds it: the elements by delta path."""

    def __init__(self):
        self.nodes: dict[tuple[int, ...], Node] = {}

    def draw(self, path: tuple[int, ...], node: Node) -> None:
        self.nodes[path] = node

    def clear_page(self, main_script_hash: str) -> None:
        """Another page's run starts: only what the main script drew stays."""
        self.nodes = {path: node for path, node in self.nodes.items() if node.script_hash == main_script_hash}

    def drop_stale(self, run_id: str, fragment_ids: list[str]) -> None:
        """A run finished: what it did not draw again goes (for a fragment's run, only within its fragments)."""
        self.nodes = {path: node for path, node in self.nodes.items()
                      if node.run_id == run_id or (fragment_ids and node.fragment_id not in fragment_ids)}

    def elements(self, since: int = 0) -> Iterator[Node]:
        return (node for node in self.nodes.values() if node.element is not None and node.seq > since)

    def texts(self, since: int = 0) -> Iterator[str]:
        return (text for node in self.elements(since) for text in element_texts(node.element))

    def widget_ids(self, script_hash: str | None = None) -> set[str]:
        return {widget_id(node.element) for node in self.elements() if script_hash in (None, node.script_hash)} - {""}

    def find(self, kind: str, label: str) -> Node | None:
        """The element of this kind whose label starts with `label` (the newest, should there be more)."""
        found = [node for node in self.elements() if element_kind(node.element) == kind
                 and getattr(node.element, kind).label.startswith(label)]
        return max(found, key=lambda node: node.seq) if found else None


# Predicates on the page: is it showing what a request waits for, drawn after message number `since`?
Shown = Callable[[PageView, int], bool]


def text_matching(pattern) -> Shown:
    return lambda page, since: any(pattern.search(text) for text in page.texts(since))


def text_containing(fragment: str) -> Shown:
    return lambda page, since: any(fragment in text for text in page.texts(since))


def heading(name: str) -> Shown:
    return lambda page, since: any(element_kind(node.element) == "heading" and name in node.element.heading.body
                                   for node in page.elements(since))


def widget(kind: str, label: str) -> Shown:
    return lambda page, since: any(element_kind(node.element) == kind and getattr(node.element, kind).label == label
                                   for node in page.elements(since))


TRAIN_READY = text_matching(LIVE)
CLASSIFY_READY = widget("file_uploader", UPLOAD_LABEL)
ANSWER_SHOWN = text_containing(ANSWER)
PAGE_READY = {title: heading(what) if isinstance(what, str) else text_matching(what) for title, what in OTHER_PAGES.items()}


def problem_in(element: Element) -> str | None:
    """What a person would see go wrong in this element: an exception or an error alert."""
    kind = element_kind(element)
    if kind == "exception":
        return "exception: " + " ".join(f"{element.exception.type}: {element.exception.message}".split())[:ERROR_CHARS]
    if kind == "alert" and element.alert.format == Alert.ERROR:
        return "error alert: " + " ".join(element.alert.body.split())[:ERROR_CHARS]
    return None


# The value a widget puts in the frontend's widget states when drawn: the script's value if it set one, else the
# default. Each reader fills the WidgetState and says whether there is a value; widgets not listed keep none.
def _number_input(widget: NumberInput, state: WidgetState) -> bool:
    if widget.set_value and widget.HasField("value"):
        value = widget.value
    elif widget.HasField("default"):
        value = widget.default
    else:
        return False  # an empty number input
    if widget.data_type == NumberInput.INT:
        state.int_value = int(value)
    else:
        state.double_value = value
    return True


def _selectbox(widget, state: WidgetState) -> bool:
    if widget.set_value and widget.HasField("raw_value"):
        state.string_value = widget.raw_value
    elif widget.HasField("default") and widget.default < len(widget.options):
        state.string_value = widget.options[widget.default]  # the server matches the formatted option
    else:
        return False
    return True


def _checkbox(widget, state: WidgetState) -> bool:
    state.bool_value = widget.value if widget.set_value else widget.default
    return True


def _slider(widget: Slider, state: WidgetState) -> bool:
    indices = widget.value if widget.set_value else widget.default
    if widget.type == Slider.SELECT_SLIDER:
        state.string_array_value.data.extend(widget.raw_value if widget.set_value and widget.raw_value
                                             else [widget.options[int(i)] for i in indices])
    else:
        state.double_array_value.data.extend(indices)
    return True


def _button_group(widget, state: WidgetState) -> bool:
    values = widget.raw_values if widget.set_value else [widget.options[i].content for i in widget.default]
    state.string_array_value.data.extend(values)
    return True


def _file_uploader(widget, state: WidgetState) -> bool:
    state.file_uploader_state_value.SetInParent()  # no files yet
    return True


SHOWN_VALUES = {"number_input": _number_input, "selectbox": _selectbox, "checkbox": _checkbox, "slider": _slider,
                "button_group": _button_group, "file_uploader": _file_uploader, "camera_input": _file_uploader}


def shown_value(element: Element) -> WidgetState | None:
    kind = element_kind(element)
    reader = SHOWN_VALUES.get(kind)
    if reader is None:
        return None
    inner = getattr(element, kind)
    state = WidgetState(id=inner.id)
    return state if reader(inner, state) else None


class WidgetValues:
    """The frontend's widget states: sent whole with every rerun."""

    def __init__(self):
        self.states: dict[str, WidgetState] = {}

    def shown(self, element: Element) -> None:
        """A widget was drawn: it keeps the value it has, unless the script set one."""
        state = shown_value(element)
        if state is not None and (state.id not in self.states or getattr(getattr(element, element_kind(element)), "set_value", False)):
            self.states[state.id] = state

    def put(self, state: WidgetState) -> None:
        self.states[state.id] = state

    def keep_only(self, ids: set[str]) -> None:
        self.states = {key: state for key, state in self.states.items() if key in ids}

    def message(self, only: set[str] | None = None, triggers: tuple[WidgetState, ...] = ()) -> WidgetStates:
        states = [state for key, state in self.states.items() if only is None or key in only]
        return WidgetStates(widgets=[*states, *triggers])


# -- one browser tab ---------------------------------------------------------------------------------------


def multipart(field: str, filename: str, content_type: str, data: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with one file, as the browser's FormData sends it, and its Content-Type."""
    boundary = f"----wsload{uuid.uuid4().hex}"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n").encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class Http:
    """The tab's HTTP requests, with its cookies; urllib in worker threads (a few requests per page, so threads are cheap enough)."""

    def __init__(self, base_url: str, pool: ThreadPoolExecutor, timeout: float):
        self.base_url, self.pool, self.timeout = base_url, pool, timeout
        self.cookies: dict[str, str] = {}

    def cookie_header(self) -> str:
        return "; ".join(f"{name}={value}" for name, value in self.cookies.items())

    async def get(self, path: str) -> bytes:
        return await self._call("GET", path, None, {})

    async def put_file(self, url: str, name: str, content_type: str, data: bytes) -> None:
        """The file uploader's PUT: the file under its own name, the XSRF token in a header and in the cookie."""
        body, body_type = multipart(name, name, content_type, data)
        headers = {"Content-Type": body_type, "X-Xsrftoken": self.cookies.get(XSRF_COOKIE_NAME, ""), "Origin": self.base_url}
        await self._call("PUT", url, body, headers)

    async def _call(self, method: str, url: str, body: bytes | None, headers: dict) -> bytes:
        return await asyncio.get_running_loop().run_in_executor(self.pool, self._blocking, method, url, body, headers)

    def _blocking(self, method: str, url: str, body: bytes | None, headers: dict) -> bytes:
        if self.cookies:
            headers = {**headers, "Cookie": self.cookie_header()}
        request = urllib.request.Request(url if "://" in url else self.base_url + url, data=body, method=method, headers=headers)
        with NO_PROXY.open(request, timeout=self.timeout) as response:
            for cookie in response.headers.get_all("Set-Cookie") or []:
                name, _, rest = cookie.partition("=")
                self.cookies[name.strip()] = rest.split(";", 1)[0]
            return response.read()


@dataclass
class Traffic:
    """What went over the wire, summed over the sessions."""

    counts: Counter = field(default_factory=Counter)
    image_seconds: list[float] = field(default_factory=list)

    def add(self, tab: "Tab") -> None:
        self.counts.update(tab.stats)
        self.counts["cached refs"] += tab.cache.references
        self.image_seconds += tab.image_seconds


@dataclass
class AutoRerun:
    interval: float
    timer: asyncio.Task


class Tab:
    """One browser tab with the app open: its websocket, what its frontend keeps, and what its user does."""

    def __init__(self, base_url: str, pool: ThreadPoolExecutor, number: int, timeout: float):
        self.number = number
        self.http = Http(base_url, pool, timeout)
        self.cache, self.page, self.widgets = MessageCache(), PageView(), WidgetValues()
        self.page_hashes: dict[str, str] = {}  # title -> page script hash, from the navigation message
        self.url_paths: dict[str, str] = {}  # page script hash -> the URL's path
        self.page_hash = self.main_hash = self.session_id = self.run_id = ""
        self.max_message_age = 2
        self.new_session_since_rerun = False
        self.auto_reruns: dict[str, AutoRerun] = {}
        self.pending_file_urls: dict[str, asyncio.Future] = {}
        self.media_fetched: set[str] = set()
        self.background: set[asyncio.Task] = set()
        self.problems: list[str] = []  # what went wrong, in order; a request reports those that happened while it ran
        self.lost: str | None = None
        self.closing = False
        self.seq = 0  # messages received
        self.last_message = self.last_sent = time.monotonic()  # when the server's last message came, when the last BackMsg went
        self.page_visits = 0  # pages the user went to
        self.drawn_visit = 0  # the visit whose page is drawn now (the old page stays until the new one's run starts)
        self.stats: Counter = Counter()
        self.image_seconds: list[float] = []  # from the image element's arrival to the image's
        self.changed = asyncio.Condition()
        self.ws: ClientConnection | None = None
        self.reader: asyncio.Task | None = None

    # -- connecting --

    async def open(self, path: str = "") -> None:
        """Load the app at /<path> as a browser does: the page, the frontend's pings, the websocket, the first script run."""
        await self.http.get("/" + path)
        await self.http.get("/_stcore/health")  # sets the _streamlit_xsrf cookie
        await self.http.get("/_stcore/host-config")
        token = self.http.cookies.get(XSRF_COOKIE_NAME, NO_TOKEN)
        self.ws = await connect(self.http.base_url.replace("http", "ws", 1) + "/_stcore/stream", subprotocols=["streamlit", token],
                                origin=self.http.base_url, additional_headers={"Cookie": self.http.cookie_header()}, proxy=None,
                                open_timeout=None, ping_interval=None, max_size=None)
        self.reader = asyncio.create_task(self._read())
        await self.rerun(page_name=path)

    async def close(self) -> None:
        self.closing = True
        self._stop_auto_reruns()
        for task in self.background:
            task.cancel()
        if self.ws is not None:
            await self.ws.close()
        await asyncio.gather(*self.background, return_exceptions=True)
        if self.reader is not None:
            await self.reader  # raises what broke it: a bug of this client, not the server's

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                self.seq += 1
                self.last_message = time.monotonic()
                self.stats["messages"] += 1
                self.stats["bytes"] += len(raw)
                self._handle(self.cache.receive(raw))
                async with self.changed:
                    self.changed.notify_all()
        except ConnectionClosed:
            pass
        except ClientError as error:  # the frontend gives up on a message it cannot handle
            self._lose(str(error))
            await self.ws.close()
        finally:
            self._lose("the websocket closed")
            async with self.changed:
                self.changed.notify_all()

    def _lose(self, why: str) -> None:
        if self.lost is None and not self.closing:
            self.lost = why
            self.problems.append(f"connection lost: {why}")
        self._stop_auto_reruns()

    # -- what the server sends --

    def _handle(self, msg: ForwardMsg) -> None:
        handler = {
            "new_session": self._new_session, "navigation": self._navigation, "delta": self._delta,
            "script_finished": self._script_finished, "auto_rerun": self._auto_rerun, "stop_auto_rerun": self._stop_auto_rerun,
            "file_urls_response": self._file_urls, "page_not_found": self._page_not_found, "session_event": self._session_event,
        }.get(msg.WhichOneof("type"))
        if handler is not None:
            handler(msg)

    def _new_session(self, msg: ForwardMsg) -> None:
        """A script run starts. A full run stops the fragments' timers (it draws them again), and another page's run
        clears the page."""
        new = msg.new_session
        self.session_id = new.initialize.session_id or self.session_id
        self.max_message_age = new.config.max_cached_message_age
        self.new_session_since_rerun = True
        self.run_id = msg.metadata.run.script_run_id
        self.stats["fragment runs" if msg.metadata.run.fragment_ids else "full runs"] += 1
        if msg.metadata.run.fragment_ids:
            return
        self._stop_auto_reruns()
        self.drawn_visit = self.page_visits
        if new.page_script_hash != self.page_hash or new.main_script_hash != self.main_hash:
            self.page.clear_page(new.main_script_hash)
            self.widgets.keep_only(self.page.widget_ids())
        self.page_hash, self.main_hash = new.page_script_hash, new.main_script_hash

    def _navigation(self, msg: ForwardMsg) -> None:
        self.page_hashes = {page.page_name: page.page_script_hash for page in msg.navigation.app_pages}
        self.url_paths = {page.page_script_hash: page.url_pathname for page in msg.navigation.app_pages}
        self.page_hash = msg.navigation.page_script_hash

    def _delta(self, msg: ForwardMsg) -> None:
        delta = msg.delta
        kind = delta.WhichOneof("type")
        if kind not in ("new_element", "add_block"):
            return  # transient elements (spinners, toasts) come and go
        element = delta.new_element if kind == "new_element" else None
        node = Node(element, delta.fragment_id, self.run_id, msg.metadata.active_script_hash, self.seq)
        self.page.draw(tuple(msg.metadata.delta_path), node)
        if element is None:
            return
        problem = problem_in(element)
        if problem:
            self.problems.append(problem)
        self.widgets.shown(element)
        self._fetch_media(element)

    def _script_finished(self, msg: ForwardMsg) -> None:
        status, run = msg.script_finished, msg.metadata.run
        fragment_ids = list(run.fragment_ids)
        if not run.script_run_id:
            return
        drawn = status in (FINISHED.FINISHED_SUCCESSFULLY, FINISHED.FINISHED_FRAGMENT_RUN_SUCCESSFULLY)
        if drawn and (fragment_ids or run.script_run_id == self.run_id):
            self.page.drop_stale(run.script_run_id, fragment_ids)
            self.widgets.keep_only(self.page.widget_ids())
        if status != FINISHED.FINISHED_EARLY_FOR_RERUN and self.new_session_since_rerun:
            self.cache.run_finished(self.max_message_age, fragment_ids)

    def _auto_rerun(self, msg: ForwardMsg) -> None:
        interval, fragment_id = msg.auto_rerun.interval, msg.auto_rerun.fragment_id
        current = self.auto_reruns.get(fragment_id)
        if not fragment_id or (current is not None and current.interval == interval and not current.timer.done()):
            return
        self._stop_auto_rerun_of(fragment_id)
        self.auto_reruns[fragment_id] = AutoRerun(interval, asyncio.create_task(self._every(interval, fragment_id)))

    def _stop_auto_rerun(self, msg: ForwardMsg) -> None:
        for fragment_id in msg.stop_auto_rerun.fragment_ids:
            self._stop_auto_rerun_of(fragment_id)

    def _file_urls(self, msg: ForwardMsg) -> None:
        waiting = self.pending_file_urls.pop(msg.file_urls_response.response_id, None)
        if waiting is not None and not waiting.done():
            waiting.set_result(msg.file_urls_response)

    def _page_not_found(self, msg: ForwardMsg) -> None:
        self.problems.append(f"page not found: {msg.page_not_found.page_name!r}")

    def _session_event(self, msg: ForwardMsg) -> None:
        if msg.session_event.WhichOneof("type") == "script_compilation_exception":
            self.problems.append("script compilation error: " + msg.session_event.script_compilation_exception.message[:ERROR_CHARS])

    # -- timers and images, in the background --

    async def _every(self, interval: float, fragment_id: str) -> None:
        """The frontend's setInterval: the fragment's rerun every `interval` seconds, without waiting for the last one."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due = max(due + interval, loop.time())  # a late timer does not fire twice to catch up
            await asyncio.sleep(due - loop.time())
            try:
                await self.rerun(fragment_id=fragment_id, auto=True)
            except ConnectionLost:
                return

    def _stop_auto_rerun_of(self, fragment_id: str) -> None:
        auto = self.auto_reruns.pop(fragment_id, None)
        if auto is not None:
            auto.timer.cancel()

    def _stop_auto_reruns(self) -> None:
        for fragment_id in list(self.auto_reruns):
            self._stop_auto_rerun_of(fragment_id)

    def _fetch_media(self, element: Element) -> None:
        if element_kind(element) != "imgs":
            return
        for image in element.imgs.imgs:
            if image.url.startswith("/media/") and image.url not in self.media_fetched:
                self.media_fetched.add(image.url)
                task = asyncio.create_task(self._fetch(image.url))
                self.background.add(task)
                task.add_done_callback(self.background.discard)

    async def _fetch(self, url: str) -> None:
        visit, start = self.drawn_visit, time.monotonic()
        try:
            await self.http.get(url)
            self.stats["media"] += 1
            self.image_seconds.append(time.monotonic() - start)
        except OSError as error:
            # Once the user clicks to another page, the server may drop the last page's images (its next full run
            # releases them) while the browser still loads them; it drops their <img> as well, so only an image of
            # the page the user is still on counts.
            if visit == self.page_visits and self.shows_image(url):
                self.problems.append(f"image {url}: {str(error)[:ERROR_CHARS]}")
            else:
                self.stats["images of pages left"] += 1

    def shows_image(self, url: str) -> bool:
        return any(image.url == url for node in self.page.elements() if element_kind(node.element) == "imgs"
                   for image in node.element.imgs.imgs)

    # -- what the browser sends --

    async def send(self, msg: BackMsg) -> None:
        if self.lost is not None:
            raise ConnectionLost(self.lost)
        try:
            await self.ws.send(msg.SerializeToString())
            self.last_sent = time.monotonic()
        except ConnectionClosed as closed:
            self._lose(f"websocket closed ({closed})")
            raise ConnectionLost(self.lost or "closed") from None

    async def rerun(self, *, fragment_id: str = "", auto: bool = False, page_hash: str = "", page_name: str = "",
                    widget_states: WidgetStates | None = None) -> None:
        """rerun_script as the frontend's sendRerunBackMsg sends it: the page, the widgets, the cached hashes, the context."""
        page_hash = page_hash or self.page_hash
        url = f"{self.http.base_url}/{self.url_paths.get(page_hash, page_name)}"
        widget_states = self.widgets.message() if widget_states is None else widget_states
        state = ClientState(query_string="", widget_states=widget_states, page_script_hash=page_hash,
                            page_name="" if page_hash else page_name, fragment_id=fragment_id, is_auto_rerun=auto,
                            cached_message_hashes=self.cache.hashes(), context_info={**CONTEXT, "url": url})
        self.new_session_since_rerun = False
        self.stats["auto reruns" if auto else "reruns"] += 1
        await self.send(BackMsg(rerun_script=state))

    async def navigate(self, title: str) -> None:
        """Click the page's link in the sidebar: its timers stop, and only the widgets outside the page go with the rerun."""
        self._stop_auto_reruns()
        self.page_visits += 1
        if title not in self.page_hashes:
            raise ClientError(f"no page {title!r} in the navigation ({', '.join(self.page_hashes)})")
        outside = self.page.widget_ids(script_hash=self.main_hash)
        await self.rerun(page_hash=self.page_hashes[title], widget_states=self.widgets.message(only=outside))

    async def submit_form(self, values: list[WidgetState], button: Node) -> None:
        """Type the values into a form and press its submit button: the values and the button's trigger go together."""
        for value in values:
            self.widgets.put(value)
        trigger = WidgetState(id=widget_id(button.element), trigger_value=True)
        await self.rerun(fragment_id=button.fragment_id, widget_states=self.widgets.message(triggers=(trigger,)))

    async def upload(self, data: bytes, name: str, content_type: str, uploader: Node) -> None:
        """Drop a file on the file uploader: ask for its URLs, PUT it, then rerun with the uploader's new value."""
        request_id = str(uuid.uuid4())
        response = asyncio.get_running_loop().create_future()
        self.pending_file_urls[request_id] = response
        await self.send(BackMsg(file_urls_request=FileURLsRequest(request_id=request_id, file_names=[name], session_id=self.session_id)))
        urls = await response
        if urls.error_msg or not urls.file_urls:
            raise ClientError(f"no upload URL: {urls.error_msg or 'none given'}")
        file_urls = urls.file_urls[0]
        await self.http.put_file(file_urls.upload_url, name, content_type, data)
        value = WidgetState(id=widget_id(uploader.element))
        value.file_uploader_state_value.uploaded_file_info.append(
            UploadedFileInfo(file_id=file_urls.file_id, file_urls=file_urls, name=name, size=len(data)))
        self.widgets.put(value)
        self.stats["uploads"] += 1
        await self.rerun(fragment_id=uploader.fragment_id)

    def silence(self) -> str:
        """Why a request may have timed out: how long the server has said nothing, and what the session last asked."""
        now = time.monotonic()
        return (f"the server's last message came {now - self.last_message:.0f} s before, the session's last BackMsg "
                f"{now - self.last_sent:.0f} s before, {len(self.auto_reruns)} fragment timers running")

    async def wait_until(self, shown: Callable[[], bool]) -> None:
        """Until the page shows something (the caller's timeout bounds it); ConnectionLost if the websocket closes first."""
        async with self.changed:
            await self.changed.wait_for(lambda: self.lost is not None or shown())
        if not shown():
            raise ConnectionLost(self.lost)


# -- the requests a session makes ---------------------------------------------------------------------------


async def open_app(tab: Tab) -> None:
    """Open the app where a visitor lands, the Overview page, until it shows the run in progress."""
    await tab.open("")
    await tab.wait_until(lambda: PAGE_READY["Overview"](tab.page, 0))


async def go_to(tab: Tab, title: str, ready: Shown) -> None:
    """Click a page's link in the sidebar and wait until the page shows what it is for."""
    since = tab.seq
    await tab.navigate(title)
    await tab.wait_until(lambda: ready(tab.page, since))


def live_text(tab: Tab) -> str:
    return next((text for text in tab.page.texts() if LIVE.search(text)), "")


async def live_update(tab: Tab) -> None:
    """Wait until the Train page's fragment redraws the progress line by itself (the session only runs its timer)."""
    first, since = live_text(tab), tab.seq
    await tab.wait_until(lambda: any(LIVE.search(text) and text != first for text in tab.page.texts(since)))


async def upload(tab: Tab, image: bytes, name: str) -> None:
    """Upload a photo on the Classify page and wait for the network's answer."""
    uploader = tab.page.find("file_uploader", UPLOAD_LABEL)
    if uploader is None:
        raise ClientError("the Classify page shows no file uploader")
    since = tab.seq
    await tab.upload(image, name, "image/png", uploader)
    await tab.wait_until(lambda: ANSWER_SHOWN(tab.page, since))


def loop_steps(tab: Tab, session: int, loop: int, live_updates: int = 1) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
    """One loop of a session, as in tests/loadtest.py: (kind, action) in order. With live_updates above 1 the session
    watches that many redraws of the progress line each time it is on the Train page, as a class watching the run does."""
    other = list(OTHER_PAGES)[(session + loop) % len(OTHER_PAGES)]
    return [
        ("train", lambda: go_to(tab, "Train", TRAIN_READY)),
        *[("live update", lambda: live_update(tab))] * live_updates,
        ("classify", lambda: go_to(tab, "Classify", CLASSIFY_READY)),
        ("upload", lambda: upload(tab, photo(session, loop), f"session{session}-loop{loop}.png")),
        (other.lower(), lambda: go_to(tab, other, PAGE_READY[other])),
    ]


async def timed(tab: Tab, kind: str, action: Callable[[], Awaitable[None]], timeout: float) -> Request:
    """Run one request and time it; its error is its own failure, else the first problem the page showed meanwhile."""
    start, seen, error = time.monotonic(), len(tab.problems), None
    try:
        await asyncio.wait_for(action(), timeout)
    except TimeoutError:
        error = f"timeout ({tab.silence()})"
    except (ClientError, OSError, WebSocketException) as failure:
        error = f"{type(failure).__name__}: {str(failure)[:ERROR_CHARS]}"
    seconds = time.monotonic() - start
    shown = tab.problems[seen:]
    return Request(tab.number, kind, seconds, error or (shown[0] if shown else None))


# -- sessions and the warm-up ----------------------------------------------------------------------------------


async def run_session(url: str, pool: ThreadPoolExecutor, result: SessionResult, deadline: float, timeout: float,
                      traffic: Traffic, live_updates: int = 1) -> SessionResult:
    """One session: open the app, then go round the loop until the deadline; the first loop may go on one timeout longer."""
    session, hard_stop = result.session, deadline + timeout
    tab = Tab(url, pool, session, timeout)
    try:
        result.requests.append(await timed(tab, "open", lambda: open_app(tab), timeout))
        while True:
            for kind, action in loop_steps(tab, session, result.loops, live_updates):
                now = time.monotonic()
                if now > hard_stop or (result.loops and now > deadline):
                    return result
                result.requests.append(await timed(tab, kind, action, timeout))
            result.loops += 1
    finally:
        await tab.close()
        traffic.add(tab)


def number_value(node: Node, value: float) -> WidgetState:
    """A number typed into a number input, as the frontend stores it (an int for an int input)."""
    number = node.element.number_input
    state = WidgetState(id=number.id)
    if number.data_type == NumberInput.INT:
        state.int_value = int(value)
    else:
        state.double_value = value
    return state


async def start_training(tab: Tab, train_images: int, epochs: int) -> None:
    """On the Train page: type the training images and epochs into the form and press Start training."""
    await tab.wait_until(lambda: tab.page.find("button", "Start training") is not None)
    images, rounds = tab.page.find("number_input", "Training images"), tab.page.find("number_input", "Epochs")
    if images is None or rounds is None:
        raise ClientError("the Train page's form has no Training images or Epochs input")
    await tab.submit_form([number_value(images, train_images), number_value(rounds, epochs)], tab.page.find("button", "Start training"))
    # A run estimated over 5 minutes asks first, as it asks a teacher: confirm it.
    await tab.wait_until(lambda: TRAIN_READY(tab.page, 0) or tab.page.find("button", "Start anyway") is not None)
    confirm = tab.page.find("button", "Start anyway")
    if confirm is not None and not TRAIN_READY(tab.page, 0):
        await tab.submit_form([], confirm)


async def warm_up(server: Server, pool: ThreadPoolExecutor, train_images: int, epochs: int, timeout: float) -> None:
    """Start the run through the Train page; once it has a checkpoint, visit every page and classify one photo."""
    tab = Tab(server.url, pool, -1, timeout)
    slow = max(timeout, 240)  # the server may decode CIFAR-10 first
    try:
        await asyncio.wait_for(tab.open("train"), timeout)
        await asyncio.wait_for(start_training(tab, train_images, epochs), timeout)
        await asyncio.wait_for(tab.wait_until(lambda: TRAIN_READY(tab.page, 0)), slow)
        await wait_for_checkpoint(server.runs_dir, timeout=slow)
        steps = [step for step in loop_steps(tab, 0, 0) if step[0] in ("classify", "upload")]
        steps += [(title.lower(), lambda title=title: go_to(tab, title, PAGE_READY[title])) for title in OTHER_PAGES]
        for kind, action in steps:
            request = await timed(tab, kind, action, timeout)
            if request.error:
                raise RuntimeError(f"warm-up {kind}: {request.error}")
        if tab.problems:
            raise RuntimeError(f"warm-up: {tab.problems[0]}")
    finally:
        await tab.close()


# -- the whole test --------------------------------------------------------------------------------------------


@dataclass
class WsReport(Report):
    """tests/loadtest.py's report, plus what the protocol shows."""

    p90_s: float = 0.0
    live_updates: int = 1  # live updates watched per visit of the Train page
    server_env: dict = field(default_factory=dict)  # environment given to the server on top of ours (Streamlit options, say)
    script_runs: int = 0  # full script runs the server started, in all sessions (a run the session interrupts sends no script_finished)
    fragment_runs: int = 0  # fragment runs it started
    auto_reruns: int = 0  # fragment reruns the sessions' timers asked for
    messages: int = 0  # ForwardMsgs received
    megabytes_received: float = 0.0  # websocket payload, after decompression
    cached_refs: int = 0  # ForwardMsgs the server sent as references to a session's cache
    images_fetched: int = 0
    images_of_pages_left: int = 0  # images the server had dropped by the time they were asked for: the session had moved on
    image_median_s: float = 0.0  # from the image element's arrival to the image's
    image_slowest_s: float = 0.0
    uploads: int = 0


def by_kind(requests: list[Request]) -> dict:
    """loadtest's count, errors, median and slowest per kind, with the 90th percentile."""
    kinds = summarize(requests)
    for kind, figures in kinds.items():
        figures["p90_s"] = round(percentile([r.seconds for r in requests if r.kind == kind], 0.9), 2)
    return kinds


def build_report(results: list[SessionResult], traffic: Traffic, figures: dict) -> WsReport:
    requests, counts, images = [r for result in results for r in result.requests], traffic.counts, traffic.image_seconds
    times = [r.seconds for r in requests]
    slowest = max(requests, key=lambda r: r.seconds)
    return WsReport(
        **figures, requests=len(requests), errors=sum(1 for r in requests if r.error),
        loops_min=min(r.loops for r in results), loops_total=sum(r.loops for r in results),
        median_s=round(statistics.median(times), 2), p90_s=round(percentile(times, 0.9), 2), p95_s=round(percentile(times, 0.95), 2),
        slowest_s=round(slowest.seconds, 2), slowest_kind=slowest.kind, by_kind=by_kind(requests),
        error_samples=[f"session {r.session} {r.kind}: {r.error}" for r in requests if r.error][:20],
        script_runs=counts["full runs"], fragment_runs=counts["fragment runs"], auto_reruns=counts["auto reruns"],
        messages=counts["messages"], megabytes_received=round(counts["bytes"] / 1e6, 1), cached_refs=counts["cached refs"],
        images_fetched=counts["media"], images_of_pages_left=counts["images of pages left"], uploads=counts["uploads"],
        image_median_s=round(statistics.median(images), 2) if images else 0.0, image_slowest_s=round(max(images, default=0.0), 2),
    )


async def load_test(server: Server, sessions: int, seconds: float, ramp: float, timeout: float, train_images: int, epochs: int,
                    live_updates: int, log: Callable[[str], None]) -> WsReport:
    sampler = Sampler(server.pid)
    rss_idle = rss_mb(sampler.server_pids())
    results, traffic = [SessionResult(i) for i in range(sessions)], Traffic()
    with ThreadPoolExecutor(max_workers=max(8, sessions), thread_name_prefix="wsload-http") as pool:
        log("starting a training run through the Train page (over the websocket), then warming every page up")
        await warm_up(server, pool, train_images, epochs, timeout)
        alone_start = run_progress(server.runs_dir)
        await asyncio.sleep(6)
        before = run_progress(server.runs_dir)
        rss_before, pss_before = rss_mb(sampler.server_pids()), pss_mb(sampler.server_pids())

        log(f"{sessions} websocket sessions for {seconds:.0f} s (ramp-up {ramp:.0f} s, {timeout:.0f} s timeout per request)")
        stop = asyncio.Event()
        sampler.start()
        sampling = asyncio.create_task(sampler.run(stop))
        reporting = asyncio.create_task(report_progress(results, sampler, stop, log))
        deadline = time.monotonic() + seconds
        sessions_done = (run_session(server.url, pool, result, deadline, timeout, traffic, live_updates) for result in results)
        await asyncio.gather(*(staggered(i * ramp / sessions, session) for i, session in enumerate(sessions_done)))
        load_seconds = time.monotonic() - sampler.started
        cores = sampler.cores()
        after = run_progress(server.runs_dir)
        await asyncio.sleep(5)
        stop.set()
        await asyncio.gather(sampling, reporting)
    peak = max([rss_before, *sampler.rss])
    figures = {
        "sessions": sessions, "live_updates": live_updates, "load_seconds": round(load_seconds, 1),
        "rss_idle_mb": round(rss_idle), "rss_before_mb": round(rss_before), "rss_peak_mb": round(peak), "pss_before_mb": round(pss_before),
        "rss_after_mb": round(rss_mb(sampler.server_pids()) if alive(server.pid) else 0.0),
        "mb_per_session": round((peak - rss_before) / sessions, 1), "run_state": after.state if after else "none",
        "training_steps": (after.step - before.step) if after and before else 0,
        "images_per_second": round(images_per_second(before, after)),
        "images_per_second_alone": round(images_per_second(alone_start, before)),
        "cpu_cores": os.cpu_count() or 0, "cpu_used": cores, "server_alive": alive(server.pid),
    }
    return build_report(results, traffic, figures)


def run_ws_load_test(data_dir: Path, sessions: int = 30, seconds: float = 90, ramp: float | None = None, timeout_s: float = 120,
                     train_images: int = 10_000, epochs: int = 200, workdir: Path | None = None,
                     log: Callable[[str], None] = print, live_updates: int = 1, server_env: dict | None = None) -> WsReport:
    """Start a server, load it with `sessions` websocket sessions for `seconds`, and report what happened.

    Refuses (UnsupportedStreamlit) on a Streamlit whose protocol it has not been checked against.

    The server's log and runs folder go to workdir, else to a temporary folder removed at the end; server_env is
    added to its environment (e.g. STREAMLIT_RUNNER_POST_SCRIPT_GC=false to try a Streamlit option)."""
    check_streamlit_version()
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="lenet-wsload-") as tmp:
            return run_ws_load_test(data_dir, sessions, seconds, ramp, timeout_s, train_images, epochs, Path(tmp), log, live_updates,
                                    server_env)
    workdir.mkdir(parents=True, exist_ok=True)
    ramp = seconds / 3 if ramp is None else ramp
    with streamlit_server(workdir, data_dir, env=server_env) as server:
        log(f"server {server.url} (pid {server.pid}), log in {server.log}")
        report = asyncio.run(load_test(server, sessions, seconds, ramp, timeout_s, train_images, epochs, live_updates, log))
    report.server_env = dict(server_env or {})
    return report


def table(report: WsReport) -> str:
    """loadtest's figures (its sessions row said for websocket sessions), what the protocol carried, and the requests by kind."""
    summary = loadtest.table(report).split("\n\n")[0].splitlines()
    sessions = f"| Sessions | {report.sessions} (websocket clients speaking Streamlit's protocol, one Streamlit session each) |"
    summary = [sessions if line.startswith("| Browser sessions |") else line for line in summary]
    extra = [
        ("Latency, 90th percentile", f"{report.p90_s:.1f} s"),
        ("Script runs started", f"{report.script_runs:,} full, {report.fragment_runs:,} fragment runs "
                                 f"({report.auto_reruns:,} fragment reruns asked for by the sessions' timers)"),
        ("Protocol traffic", f"{report.messages:,} ForwardMsgs, {report.megabytes_received:,.1f} MB "
                             f"({report.cached_refs:,} sent as references to the session's cache); "
                             f"{report.uploads:,} uploads"),
        ("Images", f"{report.images_fetched:,} fetched, median {report.image_median_s:.1f} s, slowest {report.image_slowest_s:.1f} s "
                   f"after their element; {report.images_of_pages_left:,} more gone when asked for (the session had moved on)"),
    ]
    if report.live_updates != 1:
        extra.append(("Live updates watched per visit of the Train page", f"{report.live_updates}"))
    if report.server_env:
        extra.append(("Server environment added", ", ".join(f"`{name}={value}`" for name, value in report.server_env.items())))
    lines = [*summary, *(f"| {name} | {value} |" for name, value in extra), "",
             "| Request | Count | Errors | Median | 90th percentile | Slowest |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {kind} | {s['count']} | {s['errors']} | {s['median_s']:.1f} s | {s['p90_s']:.1f} s | {s['max_s']:.1f} s |"
              for kind, s in report.by_kind.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = load_test_arguments(__doc__.split("\n\n")[0], "websocket")
    parser.add_argument("--live-updates", type=int, default=1,
                        help="redraws of the progress line a session watches per visit of the Train page (default 1, as loadtest)")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="add to the server's environment, e.g. STREAMLIT_RUNNER_POST_SCRIPT_GC=true (repeatable)")
    args = parser.parse_args(argv)
    if any("=" not in item for item in args.server_env):
        parser.error("--server-env takes NAME=VALUE")

    server_env = dict(item.split("=", 1) for item in args.server_env)
    report = run_ws_load_test(args.data, args.sessions, args.seconds, args.ramp, args.timeout, args.train_images, args.epochs,
                              args.workdir, live_updates=args.live_updates, server_env=server_env)
    return report_and_verdict(report, table(report), args.json, args.max_mb_per_session)


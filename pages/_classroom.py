"""The classroom: who controls the runs (the teacher, by PIN), presentation mode, links that restore a page's state,
and the "Students join here" panel.

Without a PIN (LENET_TEACHER_PIN, or `teacher_pin` in Streamlit's secrets) every session controls everything, as on
a laptop. With one, only a session that entered it starts, stops, resumes and deletes runs and picks the run the
class sees; the flag lives in that session's state, never in the URL, so a shared link cannot carry it.
"""

import functools
import hmac
import io
import os
import secrets
import socket
import threading
import time
from urllib.parse import urlsplit

import segno
import streamlit as st

from pages._i18n import KEPT_LANGUAGE, _

PIN_VARIABLE = "LENET_TEACHER_PIN"
FREE_TRIES = 5  # wrong PINs allowed before each further try waits
LOCKOUT_SECONDS = 30
STICKY_PARAMS = ("lang", "present")  # kept in the URL across page switches (Streamlit clears the query on navigation)
_TEACHER = "_classroom_teacher"
_SESSION_TAG = "_classroom_session"
_KEPT = "_classroom_kept:"  # session copies of URL values, for when navigation has cleared the query
_PAGE = "_classroom_page"  # the page of the session's last run, to tell a page switch
assert KEPT_LANGUAGE == _KEPT + "lang", "pages/_i18n.py reads the kept language under this key"
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "0.0.0.0", "")


# -- the teacher -----------------------------------------------------------------------------------


def teacher_pin() -> str | None:
    """The PIN that makes a session the teacher: the environment variable, else Streamlit's secrets; None: no teacher."""
    pin = os.environ.get(PIN_VARIABLE, "").strip()
    if pin:
        return pin
    try:
        if st.secrets.load_if_toml_exists():
            pin = str(st.secrets.get("teacher_pin", "") or "").strip()
    except Exception:  # noqa: BLE001 - an unreadable secrets file means no PIN from it, not a broken page
        pin = ""
    return pin or None


def pin_required() -> bool:
    return teacher_pin() is not None


def is_teacher() -> bool:
    """Whether this session may control runs: always when no PIN is set (single-user mode), else once it entered it."""
    return not pin_required() or st.session_state.get(_TEACHER) is True


def session_tag() -> str:
    """A short anonymous name for this browser session ("3fa2c1"), for the record of who stopped a run."""
    if _SESSION_TAG not in st.session_state:
        st.session_state[_SESSION_TAG] = secrets.token_hex(3)
    return st.session_state[_SESSION_TAG]


def who() -> str:
    """Who is acting, as the run's record keeps it: the teacher, or an anonymous session when nobody needs a PIN."""
    return "teacher" if pin_required() and is_teacher() else f"session {session_tag()}"


class _Guesses:
    """Wrong PINs per session and per network address, shared by the server: a new browser tab starts no fresh count."""

    def __init__(self):
        self.lock = threading.Lock()
        self.wrong: dict[str, int] = {}
        self.locked_until: dict[str, float] = {}

    def wait_left(self, keys: list[str]) -> float:
        with self.lock:
            return max([self.locked_until.get(key, 0.0) - time.monotonic() for key in keys] + [0.0])

    def record(self, keys: list[str], right: bool) -> None:
        with self.lock:
            for key in keys:
                if right:
                    self.wrong.pop(key, None)
                    continue
                self.wrong[key] = self.wrong.get(key, 0) + 1
                if self.wrong[key] >= FREE_TRIES:
                    self.locked_until[key] = time.monotonic() + LOCKOUT_SECONDS


@st.cache_resource(show_spinner=False)
def _guesses() -> _Guesses:
    return _Guesses()


def _guesser_keys() -> list[str]:
    keys = [f"session:{session_tag()}"]
    address = getattr(st.context, "ip_address", None)
    if address:
        keys.append(f"address:{address}")
    return keys


def sign_in(entered: str) -> str | None:
    """Check a PIN; None when it is right (the session is the teacher now), else what to tell the person."""
    pin = teacher_pin()
    if pin is None:
        return None
    guesses, keys = _guesses(), _guesser_keys()
    wait = guesses.wait_left(keys)
    if wait > 0:
        return _("Too many wrong PINs: try again in {seconds} s.").format(seconds=int(wait) + 1)
    right = hmac.compare_digest(entered.strip().encode(), pin.encode())
    guesses.record(keys, right)
    if not right:
        return _("That PIN is not the teacher's.")
    st.session_state[_TEACHER] = True
    return None


def sign_out() -> None:
    st.session_state.pop(_TEACHER, None)


def teacher_panel() -> None:
    """The sidebar's teacher sign-in (or sign-out); nothing when no PIN is set."""
    if not pin_required():
        return
    if st.session_state.get(_TEACHER):
        st.success(_("You are the teacher: you control the runs."), icon=":material/school:")
        st.button(_("Sign out as teacher"), key="teacher-sign-out", on_click=sign_out)
        return
    with st.expander(_("Teacher"), icon=":material/school:", expanded=False):
        with st.form("teacher-sign-in", clear_on_submit=True, border=False):
            entered = st.text_input(_("Teacher PIN"), type="password", key="teacher-pin")
            submitted = st.form_submit_button(_("Sign in"))
        if submitted:
            problem = sign_in(entered)
            if problem:
                st.error(problem, icon=":material/lock:")
            else:
                st.rerun()


def teacher_controls_note() -> None:
    """A line for students where the teacher's buttons would be, so nobody wonders where they went."""
    if not is_teacher():
        st.caption(":material/lock: " + _("The teacher controls the runs here; you see them live."))


# -- the run the class sees ------------------------------------------------------------------------


class _ClassState:
    """What the teacher shows the class, shared by every session of the server."""

    def __init__(self):
        self.lock = threading.Lock()
        self.shown_run: str | None = None


@st.cache_resource(show_spinner=False)
def _class_state() -> _ClassState:
    return _ClassState()


def shown_run() -> str | None:
    """The run the teacher last picked on the Train page (None: not chosen yet)."""
    state = _class_state()
    with state.lock:
        return state.shown_run


def show_run(run_id: str) -> None:
    """The teacher's pick becomes the class's; anyone else's choice stays their own."""
    if not pin_required() or not is_teacher():
        return
    state = _class_state()
    with state.lock:
        state.shown_run = run_id


# -- presentation mode -----------------------------------------------------------------------------


def presenting() -> bool:
    """Presentation mode: ?present=1 in the URL (the sidebar toggle sets it), kept across page switches."""
    return st.query_params.get("present") == "1"


PRESENTATION_ZOOM = 1.3  # charts and pictures on a projector


def presentation_zoom() -> float:
    """How much larger charts and pictures are drawn: PRESENTATION_ZOOM when presenting, else 1."""
    return PRESENTATION_ZOOM if presenting() else 1.0


def _presentation_changed() -> None:
    if st.session_state.get("presentation-toggle"):
        st.query_params["present"] = "1"
        st.session_state[_KEPT + "present"] = "1"
    else:
        st.query_params.pop("present", None)
        st.session_state.pop(_KEPT + "present", None)


def presentation_toggle() -> None:
    st.toggle(_("Presentation mode"), value=presenting(), key="presentation-toggle", on_change=_presentation_changed,
              help=_("Large type, no settings forms and no code: for a projector. Also ?present=1 in the URL."))


PRESENTATION_CSS = """
<style>
[data-testid="stMain"] [data-testid="stMarkdownContainer"] p,
[data-testid="stMain"] [data-testid="stMarkdownContainer"] li,
[data-testid="stMain"] [data-testid="stCaptionContainer"],
[data-testid="stMain"] [data-testid="stWidgetLabel"] p { font-size: 1.4rem; line-height: 1.5; }
[data-testid="stMain"] h1 { font-size: 3.2rem; }
[data-testid="stMain"] h2 { font-size: 2.4rem; }
[data-testid="stMain"] h3 { font-size: 1.9rem; }
[data-testid="stMain"] [data-testid="stMetricValue"] [data-testid="stMarkdownContainer"] p { font-size: 3.2rem; line-height: 1.2; }
[data-testid="stMain"] [data-testid="stMetricLabel"] [data-testid="stMarkdownContainer"] p { font-size: 1.3rem; }
[data-testid="stMain"] [data-testid="stProgress"] p { font-size: 1.3rem; }
[data-testid="stMain"] [data-testid="stSelectbox"] input { font-size: 1.3rem; }
[data-testid="stMain"] .lv-filters img { width: min(540px, 90vw); }
[data-testid="stMain"] .lv h4 { font-size: 1.4rem; }
[data-testid="stMain"] .lv-tile { width: 118px; font-size: 1.1rem; }
[data-testid="stMain"] .lv-tile img { width: 112px; height: 112px; }
[data-testid="stMain"] .block-container { max-width: 100%; padding-left: 2rem; padding-right: 2rem; }
</style>
"""


def presentation_style() -> None:
    """Large type for a projector, scoped to the main area, when presenting."""
    if presenting():
        st.html(PRESENTATION_CSS)


# -- state in the URL ------------------------------------------------------------------------------


def keep_sticky_params(page: str) -> None:
    """Put the language and presentation mode back into the URL when a page switch has just cleared it, so every
    link copied from the address bar still carries them; a value taken out on the same page (presentation mode
    turned off) stays out. Call once per run with the page about to run, before drawing it."""
    switched = st.session_state.get(_PAGE, page) != page
    st.session_state[_PAGE] = page
    for key in STICKY_PARAMS:
        if key in st.query_params:
            st.session_state[_KEPT + key] = st.query_params[key]
        elif switched and _KEPT + key in st.session_state:
            st.query_params[key] = st.session_state[_KEPT + key]
        else:
            st.session_state.pop(_KEPT + key, None)


def _to_text(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _from_text(text: str, default):
    """The URL's text as the type of default; ValueError when it is not one."""
    if isinstance(default, bool):
        if text not in ("1", "0", "true", "false"):
            raise ValueError(text)
        return text in ("1", "true")
    if isinstance(default, int):
        return int(text)
    if isinstance(default, float):
        value = float(text)
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(text)
        return value
    return text


def sync_to_url(key: str, default=None, param: str | None = None) -> None:
    """Write a widget's value (st.session_state[key]) into the URL as param (default: the key), so a copied link
    opens the page as it is now. A value equal to default is left out, to keep links short. Call it after the widget."""
    param = param or key
    value = st.session_state.get(key)
    if value is None or (default is not None and value == default):
        st.query_params.pop(param, None)
        st.session_state.pop(_KEPT + key, None)
        return
    text = _to_text(value)
    st.session_state[_KEPT + key] = text
    if st.query_params.get(param) != text:
        st.query_params[param] = text


def forget_in_url(params) -> None:
    """Take these parameters out of the URL (say, the settings of a preset that is no longer chosen)."""
    for param in params:
        st.query_params.pop(param, None)


def restore_from_url(key: str, default, options=None, param: str | None = None):
    """The value a widget with this key starts from: its own (while it lives), else the URL's (param, default: the
    key), else this session's last (a page switch clears the URL), else default. Call it before the widget and give
    the widget only the key: the value is put into st.session_state[key]. With options, other values are ignored."""
    if key in st.session_state:
        return st.session_state[key]
    for text in (st.query_params.get(param or key), st.session_state.get(_KEPT + key)):
        if text is None:
            continue
        try:
            value = _from_text(text, default)
        except ValueError:
            continue
        if options is None or value in options:
            st.session_state[key] = value
            return value
    st.session_state[key] = default
    return default


# -- students join here ----------------------------------------------------------------------------


def lan_ip() -> str:
    """This machine's address on its network, found without sending anything: connecting a UDP socket only picks the
    route and the source address; no packet leaves."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("10.254.254.254", 1))
            address = probe.getsockname()[0]
            if not address.startswith("127.") and address != "0.0.0.0":
                return address
    except OSError:
        pass
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def join_url() -> str:
    """The address students type: the one this browser used (its Host header), unless that is this machine's own
    name for itself (localhost), then the machine's network address with the same port."""
    scheme = urlsplit(getattr(st.context, "url", None) or "http://x").scheme or "http"
    return address_for(st.context.headers.get("Host") or "", st.get_option("server.port"), scheme)


def address_for(host_header: str, server_port: int, scheme: str = "http") -> str:
    """The URL for a Host header ("192.168.1.20:8501"); a local name is replaced by this machine's network address."""
    parts = urlsplit(f"//{host_header}")
    host = parts.hostname or ""
    port = parts.port or (None if host_header and host not in LOCAL_HOSTS else server_port)
    if host in LOCAL_HOSTS or host.startswith("127."):
        host = lan_ip()
    shown_host = f"[{host}]" if ":" in host else host
    if port is None or (scheme, port) in (("http", 80), ("https", 443)):
        return f"{scheme}://{shown_host}/"
    return f"{scheme}://{shown_host}:{port}/"


@functools.lru_cache(maxsize=8)
def qr_png(text: str) -> bytes:
    """A QR code of text, black on white whatever the theme (phone cameras read dark on light best). Made once per
    address: the sidebar draws it at every rerun of every session (1% of a loaded server's CPU when made each time)."""
    buffer = io.BytesIO()
    segno.make(text, error="m").save(buffer, kind="png", scale=8, border=2, dark="black", light="white")
    return buffer.getvalue()


def listens_locally() -> bool:
    return str(st.get_option("server.address") or "") in ("127.0.0.1", "localhost", "::1")


def students_join_panel(qr_width: int = 180) -> None:
    """Where students point their browsers: the address as text and as a QR code."""
    url = join_url()
    st.markdown(_("**Students join here**"))
    if listens_locally():
        st.caption(_("This server listens on this computer only: start it with `make class` so that the class can join."))
    st.code(url, language=None)
    st.image(qr_png(url), width=qr_width, caption=_("Scan with a phone camera"))
    st.caption(_("Phone cameras open http:// links on the local network; some features (the camera on the Classify "
                 "page) need https or localhost."))

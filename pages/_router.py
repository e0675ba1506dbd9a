"""What every page needs of the router: the guard that it runs inside it, and links to other pages."""

import sys
from importlib.machinery import ModuleSpec
from pathlib import Path

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager

APP = Path(__file__).resolve().parent.parent / "app.py"


def mark_main_module() -> None:
    """Give Streamlit's __main__ module a spec, so the training process does not run the app again.

    Streamlit runs each script run as a spec-less module called __main__ whose file is app.py (even when its first
    run is a page's file). multiprocessing's spawn re-runs such a main module by its path in every child it starts:
    the training process then imported Streamlit and the app for nothing, and warned "missing ScriptRunContext"
    once per page it declared. A spec named __main__ tells spawn there is no main module to re-run.
    """
    main = sys.modules.get("__main__")
    if main is None or getattr(main, "__spec__", None) is not None:
        return
    file = getattr(main, "__file__", None)
    if file and Path(file).resolve() == APP:
        main.__spec__ = ModuleSpec("__main__", None)


def through_router() -> None:
    """Make sure this page runs inside app.py's navigation; every page calls it first.

    Because a pages/ folder sits beside app.py, Streamlit runs a server's very first script run in its old folder
    mode: a browser reconnecting to /train after a restart would run this file alone, without the page config and
    with every file of pages/ listed as a page. Declaring the navigation ends that mode for the whole server and
    runs this page again inside it, with the same widget values; st.stop() ends the outer run.
    """
    mark_main_module()
    if PagesManager.uses_pages_directory:
        import app

        app.main()
        st.stop()


def link(page: str, label: str | None = None) -> None:
    """A link to another page by its file's name ("train"); its label is the page's title unless given."""
    st.page_link(f"pages/{page}.py", label=label)

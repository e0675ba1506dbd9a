"""What every page needs of the router: the guard that it runs inside it, and links to other pages."""

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager


def through_router() -> None:
    """Make sure this page runs inside app.py's navigation; every page calls it first.

    Because a pages/ folder sits beside app.py, Streamlit runs a server's very first script run in its old folder
    mode: a browser reconnecting to /train after a restart would run this file alone, without the page config and
    with every file of pages/ listed as a page. Declaring the navigation ends that mode for the whole server and
    runs this page again inside it, with the same widget values; st.stop() ends the outer run.
    """
    if PagesManager.uses_pages_directory:
        import app

        app.main()
        st.stop()


def link(page: str, label: str | None = None) -> None:
    """A link to another page by its file's name ("train"); its label is the page's title unless given."""
    st.page_link(f"pages/{page}.py", label=label)

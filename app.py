"""LeNet-5 on CIFAR-10 in the browser: `streamlit run app.py`. The router: the page list, the classroom sidebar,
then the chosen page.

A page is one file in pages/ plus one line in pages(). Nothing heavy is imported here: the navigation is declared
before torch loads, so a first visit never shows Streamlit's list of the pages/ folder's files while it waits.
"""

import streamlit as st

from pages._router import mark_main_module

mark_main_module()  # first: a training process started from this script run must not run this file again


def pages() -> list:
    from pages._i18n import _

    return [
        st.Page("pages/overview.py", title=_("Overview"), icon=":material/home:", default=True),
        st.Page("pages/dataset.py", title=_("Dataset"), icon=":material/photo_library:"),
        st.Page("pages/model.py", title=_("Model"), icon=":material/account_tree:"),
        st.Page("pages/inside.py", title=_("Inside the network"), icon=":material/visibility:"),
        st.Page("pages/train.py", title=_("Train"), icon=":material/model_training:"),
        st.Page("pages/evaluate.py", title=_("Evaluate"), icon=":material/fact_check:"),
        st.Page("pages/classify.py", title=_("Classify"), icon=":material/image_search:"),
    ]


def _language_chosen() -> None:
    st.query_params["lang"] = st.session_state["language-picker"]  # in the URL: page switches and shared links keep it


def language_picker() -> None:
    """The sidebar's language selector; the language itself lives in ?lang= (pages/_i18n.py reads it)."""
    from pages._i18n import LANGUAGES, _, language

    st.session_state["language-picker"] = language()  # follows the URL, the browser's language, or a shared link
    st.selectbox(":material/translate: " + _("Language"), list(LANGUAGES), format_func=LANGUAGES.get, key="language-picker",
                 on_change=_language_chosen)


def classroom_sidebar() -> None:
    """The language, the teacher's sign-in, presentation mode and the students' way in, on every page."""
    from pages import _classroom
    from pages._i18n import _

    with st.sidebar:
        language_picker()
        _classroom.teacher_panel()
        _classroom.presentation_toggle()
        with st.expander(_("Students join here"), icon=":material/qr_code_2:"):
            _classroom.students_join_panel()


def main() -> None:
    from pages import _classroom
    from pages._i18n import _

    navigation = st.navigation(pages())  # first: no run ever shows Streamlit's own list of the pages/ folder
    # A page switch has just cleared ?present=1 and ?lang= (the page titles above already read the session's kept
    # language: see pages/_i18n.language).
    _classroom.keep_sticky_params(navigation.url_path)
    presenting = _classroom.presenting()
    st.set_page_config(page_title=_("LeNet-5 on CIFAR-10"), page_icon=":material/neurology:", layout="wide",
                       initial_sidebar_state="collapsed" if presenting else "auto")
    _classroom.presentation_style()
    classroom_sidebar()
    navigation.run()


if __name__ == "__main__":  # Streamlit runs this file as __main__; pages import it only for the guard in pages/_router.py
    main()

"""The app's language: gettext catalogs (locale/<lang>/LC_MESSAGES/app.mo) through Babel, one per browser session.

Every string a person reads goes through _() (or ngettext() for counts), so `pybabel extract` finds it and a
catalog translates it. The language comes from ?lang= in the URL (it survives page switches and shared links),
else the browser's preferred language (st.context.locale), else English. Adding a language is adding a catalog.
"""

from functools import cache
from pathlib import Path

import streamlit as st
from babel.support import NullTranslations, Translations

LOCALE_DIR = Path(__file__).resolve().parent.parent / "locale"
DOMAIN = "app"
LANGUAGES = {"en": "English", "ko": "한국어"}
DEFAULT = "en"


@cache
def translations(language: str) -> NullTranslations:
    """The compiled catalog of a language (English is the source text: no catalog needed)."""
    if language == DEFAULT:
        return NullTranslations()
    return Translations.load(str(LOCALE_DIR), [language], DOMAIN)


def language() -> str:
    """This session's language: ?lang=, else the browser's, else English."""
    asked = st.query_params.get("lang")
    if asked in LANGUAGES:
        return asked
    browser = (getattr(st.context, "locale", None) or "").split("-")[0].lower()
    return browser if browser in LANGUAGES else DEFAULT


def _(message: str) -> str:
    return translations(language()).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return translations(language()).ngettext(singular, plural, n)

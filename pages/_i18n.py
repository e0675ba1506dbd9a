"""The app's language: gettext catalogs (locale/<lang>/LC_MESSAGES/app.po) through Babel, one per browser session.

Every string a person reads goes through _() (or ngettext() for counts), so `pybabel extract` finds it and a
catalog translates it (`make messages` extracts and updates the catalogs). The .po files are compiled in memory when
the server first needs them, so no compiled file is kept in the repository or goes stale. The language comes from
?lang= in the URL (it survives page switches and shared links), else the browser's preferred language
(st.context.locale), else English. Adding a language is adding a catalog and a line in LANGUAGES.
"""

import io
from functools import cache
from pathlib import Path

import streamlit as st
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

LOCALE_DIR = Path(__file__).resolve().parent.parent / "locale"
DOMAIN = "app"
LANGUAGES = {"en": "English", "ko": "한국어"}
DEFAULT = "en"


def catalog_path(language: str) -> Path:
    return LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"


@cache
def translations(language: str) -> NullTranslations:
    """A language's catalog, compiled in memory once per server (English is the source text: no catalog needed).
    Untranslated and fuzzy entries fall back to English, as gettext does."""
    path = catalog_path(language)
    if language == DEFAULT or not path.is_file():
        return NullTranslations()
    with open(path, "rb") as f:
        catalog = read_po(f, locale=language, domain=DOMAIN)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)


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

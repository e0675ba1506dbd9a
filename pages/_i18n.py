"""The app's language: gettext catalogs (locale/<lang>/LC_MESSAGES/app.po) through Babel, one per browser session.

Every string a person reads goes through _() (or ngettext() for counts), so `pybabel extract` finds it and a
catalog translates it (`make messages` extracts and updates the catalogs). Strings defined before they are shown
(a list of choices, a constant) are marked with N_() where they are written and go through _() where they are shown.
The .po files are compiled in memory when the server first needs them, so no compiled file is kept in the repository
or goes stale. The language comes from ?lang= in the URL (it survives page switches and shared links), else the
browser's preferred language (st.context.locale), else English. English is the source language: it has no catalog.
Adding a language is adding a catalog (`pybabel init -i locale/app.pot -d locale -D app -l xx`) and a line in LANGUAGES.

The engine (lenet/) stays English, for the command line and logs; the sentences it says that reach a page (a setting
out of range, a file that is no image, the dataset's state) are listed in ENGINE_SENTENCES and translated by
engine_text(), which reads their values back out of the English sentence.
"""

import io
import re
import string
from functools import cache, partial
from pathlib import Path

import streamlit as st
from babel import Locale
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations
from streamlit.runtime.scriptrunner import get_script_run_ctx

LOCALE_DIR = Path(__file__).resolve().parent.parent / "locale"
DOMAIN = "app"
LANGUAGES = {"en": "English", "ko": "한국어"}  # each in its own language, as the sidebar's selector lists them
DEFAULT = "en"
# Where pages/_classroom.keep_sticky_params keeps ?lang= for this session: the run right after a page switch (which
# clears the URL) declares the navigation before it puts ?lang= back, and its page titles must be in the language.
KEPT_LANGUAGE = "_classroom_kept:lang"


def N_(message: str) -> str:
    """Marks a string for extraction where it is written; _() translates it where it is shown."""
    return message


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
    """This session's language: ?lang= (or its copy kept across a page switch), else the browser's, else English
    (also outside a script run)."""
    if get_script_run_ctx(suppress_warning=True) is None:  # no session (a unit test, a background thread)
        return DEFAULT
    asked = st.query_params.get("lang") or st.session_state.get(KEPT_LANGUAGE)
    browser = getattr(st.context, "locale", None) or ""
    if asked in LANGUAGES:
        return asked
    browser = browser.replace("_", "-").split("-")[0].lower()
    return browser if browser in LANGUAGES else DEFAULT


def babel_locale(language_code: str | None = None) -> Locale:
    """The Babel locale numbers and dates are formatted for."""
    return Locale.parse(language_code or language())


def _(message: str) -> str:
    return translations(language()).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return translations(language()).ngettext(singular, plural, n)


def gettext_in(language_code: str | None, message: str) -> str:
    """_() in a given language (None: the session's), for functions that take the language as an argument."""
    return translations(language_code or language()).gettext(message)


def translate(message: str, language_code: str | None = None) -> str:
    """_() with the language as an argument (None: the session's): a widget's format_func, through bound()."""
    return gettext_in(language_code, message)


def bound(function):
    """A function taking language_code (translate, class_name) with this session's language fixed as it is now: for a
    widget's format_func, which Streamlit may call again outside the script run (AppTest does), where no session is."""
    return partial(function, language_code=language())


# -- CIFAR-10's classes ----------------------------------------------------------------------------

# The ten names, spelled out so that pybabel finds them, in lenet.data.CLASSES's order (a test checks it); CLASSES
# itself never changes. Not imported from lenet: app.py declares the navigation before torch loads.
CLASS_NAMES = (N_("airplane"), N_("automobile"), N_("bird"), N_("cat"), N_("deer"), N_("dog"), N_("frog"), N_("horse"),
               N_("ship"), N_("truck"))


def class_name(which: int | str, language_code: str | None = None) -> str:
    """A class (its index or its CIFAR-10 name) as the page calls it, in the session's language."""
    name = CLASS_NAMES[int(which)] if not isinstance(which, str) else which
    return gettext_in(language_code, name)


# -- what the engine says --------------------------------------------------------------------------

# TrainConfig's labels and help are marked in lenet/train.py itself (its N_), which babel.cfg extracts; here only the
# short labels its validation sentences derive from them (the label before " (").
OPTION_SHORT_LABELS = (
    N_("Augment"), N_("Crop padding"), N_("Training images"), N_("Test every"), N_("Log every"),
)

# The engine's sentences that reach a page, in its own English; a {value} stands for any text. A sentence may follow
# "name: " (a file, a folder) and the engine capitalizes a sentence that starts a message: engine_text() allows both.
ENGINE_SENTENCES = (
    # the dataset (lenet.service, lenet.data)
    N_("No CIFAR-10 in {folder}. Download it (about 170 MB) on the Dataset page or with `python -m lenet download`, "
       "or set LENET_DATA to a folder that holds it."),
    N_("No CIFAR-10 in {folder}: expected cifar-10-batches-py/ or train/<class>/ and test/<class>/ folders. Download it "
       "(python -m lenet download, or the Dataset page) or point --data / LENET_DATA at a copy."),
    N_("No CIFAR-10 in {folder}"),
    N_("Loading CIFAR-10 from {folder} (the first time decodes every image: a progress bar follows)"),
    N_("Starting the download of CIFAR-10"),
    N_("Downloading CIFAR-10: {done} of {total} MB"),
    N_("Downloaded; decoding CIFAR-10"),
    N_("Decoding CIFAR-10 from {folder}: {done} of {total} images"),
    N_("CIFAR-10 is ready"),
    N_("{train} training and {test} test images ({layout} at {folder})"),
    N_("CIFAR-10 could not be loaded"),
    N_("Could not load CIFAR-10 from {folder}: {error}"),
    N_("CIFAR-10 in {folder} was not ready within {seconds} s"),
    N_("Could not download CIFAR-10 from {url} into {folder}: {reason}. Check the network connection, or copy CIFAR-10 "
       "into that folder."),
    N_("Cannot create the data folder {folder}: {reason}"),
    N_("missing CIFAR-10 batch files {files}"),
    N_("{folder} is missing: an image folder needs train/<class>/ and test/<class>/"),
    N_("{folder} holds no images"),
    N_("not a readable image ({reason})"),
    N_("not a readable CIFAR-10 batch ({reason})"),
    # the training settings (lenet.train)
    N_("{label} must be one of {choices} (got {value})."),
    N_("{label} must be on or off (got {value})."),
    N_("{label} must be a whole number (got {value})."),
    N_("{label} must be a number (got {value})."),
    N_("{label} must be from {low} to {high} (you entered {value})."),
    N_("{label} must be above {low} and at most {high} (you entered {value})."),
    N_("Batch size must be at most the {available} images that train (you entered {value})."),
    N_("Validation images must be fewer than the {count} training images."),
    N_("Device {device} is not on this machine: choose one of {devices}."),
    N_("Training images must be at most the {count} there are (you entered {value})."),
    N_("unknown settings: {names}"),
    N_("unknown preset {name}; choose one of {names}"),
    N_("the loss became {loss} at step {step}: training stopped. Lower the learning rate and start again."),
    # runs (lenet.runs, lenet.classroom)
    N_("run {run} is running; stop it or watch it before starting another"),
    N_("run {run} is running in another process (a second server or the command line); stop it or watch it before "
       "starting another"),
    N_("cannot write to the run folder {folder}: {reason}"),
    N_("cannot write the runs folder {folder}: {reason}"),
    N_("run {run} is {state}; only interrupted, stopped or failed runs can be resumed"),
    N_("run {run} has no checkpoint to resume from"),
    N_("holds no optimizer state to resume from"),
    N_("cannot name a new run in {folder}: too many started at {stamp}"),
    N_("{run} is not a run id (a folder name inside {folder})"),
    N_("not a run folder (config.json missing or unreadable)"),
    N_("could not write to {file}: {reason}"),
    N_("run {run} is training: stop it first"),
    N_("run {run} holds the model the app uses by default"),
    N_("no run {run} in {folder}"),
    # checkpoints (lenet.checkpoint)
    N_("no such checkpoint file"),
    N_("cannot be read ({reason})"),
    N_("{size} MB is far too large for a LeNet-5 checkpoint (at most {limit} MB)"),
    N_("not a readable LeNet-5 checkpoint (the file is empty)"),
    N_("not a readable LeNet-5 checkpoint (a damaged or truncated zip archive)"),
    N_("not a readable LeNet-5 checkpoint (not a file torch.save writes)"),
    N_("not a readable LeNet-5 checkpoint ({reason})"),
    N_("unpacks to {size} MB, far too large for a LeNet-5 checkpoint (at most {limit} MB); refused before loading"),
    N_("not a LeNet-5 checkpoint nor a state_dict (it holds a {kind})"),
    N_("not a LeNet-5 CIFAR-10 checkpoint ({found}; format {format} expected)"),
    N_("the checkpoint lacks its weights or metadata"),
    N_("the weights are not LeNet-5's ({details})"),
    # images (lenet.predict)
    N_("{width} x {height} pixels is too large (limit {limit} megapixels)"),
    N_("{width} x {height} pixels is too large (limit {limit} megapixels for JPEG)"),
    N_("{width} x {height} pixels is too large (limit {limit} megapixels for progressive JPEG)"),
    N_("{width} x {height} pixels is too large (limit {limit} megapixels for WebP; save it as JPEG)"),
    N_("over {pixels} megapixels is too large (limit {limit} megapixels)"),
    N_("the file is truncated or corrupt ({reason})"),
    N_("colour mode {mode} is not supported ({reason})"),
    N_("not an image PIL can read (JPEG, PNG, WebP, GIF, BMP, TIFF or PPM)"),
    N_("cannot read the file ({reason})"),
    N_("the file is empty"),
    N_("the file is larger than the {limit} MB limit"),
    N_("the model's outputs are not finite numbers: it cannot be used (was it trained with a learning rate too high?)"),
)


@cache
def _sentence_pattern(template: str) -> re.Pattern:
    """The English sentence as a regular expression with one named group per {placeholder}."""
    parts = []
    for literal, field, _spec, _conversion in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if field is not None:
            parts.append(f"(?P<{field}>.+?)")
    return re.compile("".join(parts), re.DOTALL)


def _translate_sentence(text: str, language_code: str | None) -> str | None:
    for template in ENGINE_SENTENCES:
        match = _sentence_pattern(template).fullmatch(text)
        if match:
            values = match.groupdict()
            if "label" in values:
                values["label"] = gettext_in(language_code, values["label"])  # a setting's label (OPTION_SHORT_LABELS)
            if "state" in values:  # a run's state ("stopped"): the Train page's word for it
                values["state"] = gettext_in(language_code, values["state"])
            return gettext_in(language_code, template).format(**values)
    return None


def engine_text(message: str, language_code: str | None = None) -> str:
    """One of the engine's English sentences in the session's language; a sentence it does not know stays as it is.

    A sentence may follow a name ("`photo.jpg`: the file is empty", "runs/x: not a run folder …"), and one that starts
    the message is capitalized ("The file is empty")."""
    text = str(message)
    if (language_code or language()) == DEFAULT:
        return text
    found = _translate_sentence(text, language_code)
    if found is not None:
        return found
    if text[:1].isupper():
        found = _translate_sentence(text[0].lower() + text[1:], language_code)
        if found is not None:
            return found[:1].upper() + found[1:]
    for separator in re.finditer(": ", text):
        found = _translate_sentence(text[separator.end():], language_code)
        if found is not None:
            return text[: separator.end()] + found
    return text

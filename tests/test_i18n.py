"""The app in Korean and English: the catalogs against the code, the formatting, the engine's sentences, and every
page rendered through AppTest with ?lang=ko (no English left where a translation exists) and ?lang=en.

The messages come from Babel's own extractor run over what babel.cfg names, with the keywords `make messages` uses,
so a string wrapped in the code but missing, empty or fuzzy in the Korean catalog fails here.
"""

import io
import json
import os
import re
import string
from pathlib import Path

import pyarrow as pa
import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po
from google.protobuf.message import Message
from streamlit.testing.v1 import AppTest

from lenet.checkpoint import CheckpointError, load_model_bytes
from lenet.data import CLASSES
from lenet.predict import ImageError, load_image
from lenet.service import DatasetService
from lenet.train import ConfigError, TrainConfig, preset
from pages import _i18n, _resources
from pages._format import duration, number, percent, points, with_article
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "app.py"
KEYWORDS = {**DEFAULT_KEYWORDS, "_": None, "N_": None, "ngettext": (1, 2)}  # as `make messages`: -k _ -k N_ -k ngettext:1,2
PAGES = ["overview", "dataset", "model", "inside", "train", "evaluate", "classify"]
HANGUL = re.compile("[\uac00-\ud7a3]")


# -- the catalogs ----------------------------------------------------------------------------------


def extracted() -> dict[str, set[str]]:
    """Every message the code marks, as `pybabel extract -F babel.cfg` finds it: msgid -> the files using it."""
    with open(REPO / "babel.cfg") as f:
        method_map, options_map = parse_mapping_cfg(f)
    found: dict[str, set[str]] = {}
    for filename, _lineno, message, _comments, _context in extract_from_dir(str(REPO), method_map, options_map, KEYWORDS):
        for msgid in (message if isinstance(message, tuple) else (message,)):
            if msgid:
                found.setdefault(msgid, set()).add(filename)
    return found


def catalog(path: Path):
    with open(path, "rb") as f:
        return read_po(f)


def placeholders(text: str) -> set[str]:
    return {field for _literal, field, _spec, _conversion in string.Formatter().parse(text) if field is not None}


@pytest.fixture(scope="module")
def messages() -> dict[str, set[str]]:
    found = extracted()
    assert len(found) > 300, "the extractor found too few messages: is babel.cfg right?"
    return found


@pytest.fixture(scope="module")
def korean():
    return catalog(_i18n.catalog_path("ko"))


def test_every_message_the_code_uses_is_translated_in_korean(messages, korean):
    problems = []
    for msgid, files in sorted(messages.items()):
        entry = korean.get(msgid)
        where = ", ".join(sorted(files))
        if entry is None:
            problems.append(f"missing ({where}): {msgid!r}")
        elif not entry.string:
            problems.append(f"untranslated ({where}): {msgid!r}")
        elif entry.fuzzy:
            problems.append(f"fuzzy ({where}): {msgid!r}")
    assert not problems, "run `make messages` and translate:\n" + "\n".join(problems)


def test_translations_keep_every_placeholder(korean):
    problems = [f"{entry.id!r} -> {entry.string!r}" for entry in korean
                if entry.id and entry.string and placeholders(entry.id) != placeholders(entry.string)]
    assert not problems, "a translation drops or renames a {placeholder}:\n" + "\n".join(problems)


def test_the_template_is_up_to_date(messages):
    """locale/app.pot (committed) holds exactly what the code marks: `make messages` was run after the last change."""
    template = {entry.id for entry in catalog(REPO / "locale" / "app.pot") if entry.id}
    new, gone = sorted(set(messages) - template), sorted(template - set(messages))
    assert not new and not gone, f"run `make messages`: new {new}, gone {gone}"


def test_the_korean_catalog_compiles_and_translates():
    translations = _i18n.translations("ko")
    assert translations.gettext("Overview") == "한눈에 보기"
    assert translations.gettext("a message nobody wrote") == "a message nobody wrote"  # unknown: the English falls through
    assert _i18n.translations("en").gettext("Overview") == "Overview"  # English is the source: no catalog


def test_every_language_offered_has_a_catalog():
    for code in _i18n.LANGUAGES:
        assert code == _i18n.DEFAULT or _i18n.catalog_path(code).is_file(), code


def test_the_class_names_are_cifar10s_and_translated():
    assert _i18n.CLASS_NAMES == CLASSES  # lenet's own list, never changed
    assert [_i18n.class_name(name, "ko") for name in CLASSES] == ["비행기", "자동차", "새", "고양이", "사슴", "개", "개구리", "말", "배",
                                                                  "트럭"]
    assert _i18n.class_name(3, "ko") == "고양이" and _i18n.class_name("cat", "en") == "cat"


def test_the_training_options_words_are_lenets(messages):
    """The Train page shows TrainConfig's labels and help through _(): each must be in the catalogs (marked with N_ in
    lenet/train.py), and so must the short label its validation sentences use (pages/_i18n.OPTION_SHORT_LABELS)."""
    for option in TrainConfig.options():
        meta = option.metadata
        for text in (meta["label"], meta["help"], meta["label"].split(" (")[0]):
            assert text in messages, f"{option.name}: {text!r} is not extracted into the catalogs"


# -- numbers, durations and words ------------------------------------------------------------------


def test_durations_in_korean_and_english():
    assert duration(150, "ko") == "2분 30초"
    assert duration(5, "ko") == "5초"
    assert duration(2 * 3600 + 60 * 7, "ko") == "2시간 7분"
    assert duration(150, "en") == "2 min 30 s"
    assert duration(65, "en") == "1 min 05 s"
    assert duration(7300, "en") == "2 h 01 min"
    assert duration(None, "ko") == "–"


def test_numbers_and_percentages_for_the_language():
    assert number(1234.4, language_code="ko") == "1,234"
    assert number(1234, language_code="en") == "1,234"
    assert number(0.12345, 3, "ko") == "0.123"
    assert percent(0.7473, language_code="ko") == "74.7%"
    assert percent(0.7473, 0, "en") == "75%"
    assert percent(None) == "–"
    assert points(0.647, "ko") == "+64.7%p"
    assert points(0.647, "en") == "+64.7 points"
    assert points(-0.02, "ko") == "-2.0%p"


def test_articles_are_english_only():
    assert with_article("airplane", "en") == "an airplane" and with_article("cat", "en") == "a cat"
    assert with_article("고양이", "ko") == "고양이"  # Korean has no articles


# -- what the engine says --------------------------------------------------------------------------


def engine_sentences(tmp_path: Path) -> list[str]:
    """Sentences the real engine says, one of each kind a page shows: settings out of range, files that are no images
    or no checkpoints, a dataset folder that holds nothing, a run that cannot be deleted."""
    sentences = []
    for values in ({"lr": 0.0}, {"epochs": 0}, {"batch_size": 0}, {"momentum": 1.5}, {"augment": 3}, {"optimizer": "rmsprop"},
                   {"epochs": 2.5}, {"lr": "fast"}, {"train_subset": 500, "batch_size": 600}, {"validation_size": 50_000},
                   {"train_subset": 60_000}, {"device": "nonexistent"}, {"test_every": -1}):
        sentences += preset("quick", **values).problems().values()
    for values in ({"validation_size": 2000}, {"train_subset": 2000}):  # a data folder with fewer training images
        sentences += preset("quick", **values).problems(train_images=1000).values()
    for call in (lambda: preset("fastest"), lambda: TrainConfig.from_dict({"colour": 1})):
        with pytest.raises(ConfigError) as error:
            call()
        sentences.append(str(error.value))
    for data, name in ((b"", "empty.jpg"), (b"not an image at all", "notes.txt"), (b"\xff\xd8\xff\xe0 truncated", "cut.jpg")):
        with pytest.raises(ImageError) as error:
            load_image(data, name)
        sentences.append(str(error.value))
    for data in (b"", b"PK\x03\x04 damaged", b"plain text"):
        with pytest.raises(CheckpointError) as error:
            load_model_bytes(data, "model.pt")
        sentences.append(str(error.value))
    sentences.append(DatasetService(tmp_path).status().message)
    return sentences


def test_the_engines_sentences_are_translated(tmp_path):
    sentences = engine_sentences(tmp_path)
    assert len(sentences) >= 20
    for sentence in sentences:
        assert _i18n.engine_text(sentence, "en") == sentence  # English: the engine's own words
        korean = _i18n.engine_text(sentence, "ko")
        assert korean != sentence and HANGUL.search(korean), f"no Korean sentence for the engine's {sentence!r}"


def test_engine_text_keeps_the_values_and_the_file_name():
    said = _i18n.engine_text("Epochs must be from 1 to 1,000 (you entered 0).", "ko")
    assert said == "에폭 수: 1부터 1,000까지 입력할 수 있어요 (입력한 값: 0)."
    assert _i18n.engine_text("`photo.jpg`: the file is empty", "ko") == "`photo.jpg`: 빈 파일이에요"
    assert _i18n.engine_text("something the engine never said", "ko") == "something the engine never said"


# -- the pages, rendered ---------------------------------------------------------------------------


# Fields that name things rather than show them (a link's page "train", a widget's id, an icon).
NOT_SHOWN = {"id", "page", "page_script_hash", "query_string", "icon", "form_id", "type", "tag", "format", "color", "theme",
             "vega_lite_theme", "url", "key", "element_hash", "fragment_id", "cmd"}


def proto_strings(proto, in_chart: bool = False) -> list[str]:
    """Every text a protobuf element carries (labels, bodies, options, help), with the column names and text cells of
    its tables and the titles and data of its charts (a chart's column names are its fields: not shown)."""
    found = []
    in_chart = in_chart or proto.DESCRIPTOR.name in ("VegaLiteChart", "ArrowVegaLiteChart")
    for descriptor, value in proto.ListFields():
        if descriptor.name in NOT_SHOWN:
            continue
        repeated = not isinstance(value, (str, bytes, Message)) and hasattr(value, "__len__")  # a repeated field or a map
        values = list(value) if repeated else [value]
        for item in values:
            if isinstance(item, Message):
                found += proto_strings(item, in_chart)
            elif isinstance(item, str):
                found += chart_strings(item) if descriptor.name == "spec" else [item]
            elif isinstance(item, bytes) and descriptor.name == "data":
                found += arrow_strings(item, columns=not in_chart)
    return found


def arrow_strings(data: bytes, columns: bool = True) -> list[str]:
    try:
        table = pa.ipc.open_stream(io.BytesIO(data)).read_all()
    except (pa.ArrowInvalid, OSError):
        return []
    found = [str(name) for name in table.column_names if not str(name).startswith("__")] if columns else []
    for column in table.columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            found += [value for value in column.to_pylist() if isinstance(value, str)]
    return found


def chart_strings(spec: str) -> list[str]:
    """A Vega-Lite spec's titles (chart, axes, legends, tooltips) and its inline data's text."""
    try:
        tree = json.loads(spec)
    except ValueError:
        return [spec]
    found = []

    def walk(node, key=None):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, k)
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        elif isinstance(node, str) and key in ("title", "text", "label", "domain"):  # a scale's domain: a legend's labels
            found.append(node)

    walk(tree)
    for values in tree.get("datasets", {}).values():
        for row in values if isinstance(values, list) else []:
            found += [v for v in row.values() if isinstance(v, str)]
    return found


def shown_texts(at: AppTest) -> list[str]:
    """Every text of the page's elements and containers (expanders, tabs), the sidebar included."""
    texts = []

    def walk(node):
        proto = getattr(node, "proto", None)
        if proto is not None:
            texts.extend(proto_strings(proto))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return texts


def english_left(texts: list[str], korean) -> list[str]:
    """Source strings that have a Korean translation, shown as they are: a whole text equal to one, or a longer
    message (three words or more, no placeholders) inside a text."""
    whole, inside = set(), []
    for entry in korean:
        if not entry.id or not entry.string or entry.string == entry.id:
            continue
        whole.add(entry.id)
        if not placeholders(entry.id) and len(entry.id.split()) >= 3:
            inside.append(entry.id)
    left = set()
    for text in texts:
        if text in whole:
            left.add(text)
        left.update(message for message in inside if message in text)
    return sorted(left)


@pytest.fixture(scope="module")
def env(tmp_path_factory, cifar_dir):
    """The real data, a runs folder with one short finished run (two epochs, so the Inside page's time machine shows),
    and the shipped model."""
    runs = tmp_path_factory.mktemp("runs")
    saved = {name: os.environ.get(name) for name in ("LENET_DATA", "LENET_RUNS", "LENET_CHECKPOINT")}
    os.environ.update({"LENET_DATA": str(cifar_dir), "LENET_RUNS": str(runs)})
    os.environ.pop("LENET_CHECKPOINT", None)
    registry = _resources._registry(str(runs), str(cifar_dir))
    run_id = registry.start(preset("quick", train_subset=1000, epochs=2))
    wait_until(lambda: not registry.snapshot(run_id).live, timeout=120)
    yield {"run": run_id}
    registry.stop()
    registry.wait(30)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def open_page(name: str, lang: str | None = None, locale: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=120)
    if lang is not None:
        at.query_params["lang"] = lang
    if locale is not None:
        at.context = {"locale": locale}
    at.run()
    wait_until(lambda: not _resources.dataset_service().status().busy, timeout=120)
    at.switch_page(f"pages/{name}.py").run()
    if name == "classify":  # a test image, so the answer and its chart show
        at.segmented_control(key="source").set_value("A test image").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.mark.parametrize("name", PAGES)
def test_each_page_in_korean_shows_no_english_that_has_a_translation(env, korean, name):
    at = open_page(name, lang="ko")
    assert not at.error, [e.value for e in at.error]
    texts = shown_texts(at)
    assert any(HANGUL.search(text) for text in texts)
    left = english_left(texts, korean)
    assert not left, f"English shown on the {name} page in Korean: {left}"


def test_the_time_machine_in_korean(env, korean):
    """The Inside page on a run that kept each epoch's weights: its epoch slider, time machine and labelled grids."""
    at = open_page("inside", lang="ko")
    checkpoint = _resources.registry().snapshot(env["run"]).checkpoint
    at.selectbox(key="inside-model").set_value(f"file:{checkpoint}").run()
    assert not at.exception and not at.error, [e.value for e in at.exception]
    assert any(h.value == "6 · 타임머신" for h in at.header)
    assert not english_left(shown_texts(at), korean)


def test_english_is_the_default_and_shows_no_korean(env):
    at = open_page("overview")
    assert at.title[0].value == "LeNet-5 on CIFAR-10"
    assert not [text for text in shown_texts(at) if HANGUL.search(text) and text not in _i18n.LANGUAGES.values()]
    assert open_page("overview", lang="en", locale="ko-KR").title[0].value == "LeNet-5 on CIFAR-10"  # the URL wins


def test_the_browsers_language_is_the_default(env):
    assert open_page("overview", locale="ko-KR").title[0].value == "CIFAR-10으로 배우는 LeNet-5"
    assert open_page("overview", locale="fr-FR").title[0].value == "LeNet-5 on CIFAR-10"  # no French catalog: English


def test_the_sidebar_selector_sets_the_language_in_the_url_and_it_survives_a_page_switch(env):
    at = open_page("overview")
    at.selectbox(key="language-picker").set_value("ko").run()
    assert at.query_params["lang"] == "ko" and at.title[0].value == "CIFAR-10으로 배우는 LeNet-5"
    at.switch_page("pages/model.py")
    del at.query_params["lang"]  # a page switch clears the URL's query, as the browser does
    at.run()
    assert at.title[0].value.endswith("모델")
    assert at.query_params["lang"] == "ko"  # put back for links copied from the address bar
    assert at.selectbox(key="language-picker").value == "ko"

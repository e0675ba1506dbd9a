"""The classroom in a real Chromium against one real `streamlit run app.py` with a teacher PIN, on the real CIFAR-10.

The tests run in file order on one server: the first opens it fresh (the sidebar must list page titles, never the
pages/ folder's files); the teacher then trains a short run that a student watches live; links restore what the
teacher showed; and the Train page is laid out without overlaps or cut text from a phone to a 1080p projector, light
and dark. Screenshots go to test-artifacts/screenshots/classroom/.
"""

import re
from pathlib import Path

import pytest

from tests.browser import NEIGHBOURS, layout_problems
from tests.loadtest import streamlit_server

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO / "test-artifacts" / "screenshots" / "classroom"
TIMEOUT_MS = 60_000
PIN = "8642"
TITLES = ["Overview", "Dataset", "Model", "Inside the network", "Train", "Evaluate", "Classify"]
SCREENS = {  # name: context options
    "1280x720@1.5": {"viewport": {"width": 1280, "height": 720}, "device_scale_factor": 1.5},
    "1440x900": {"viewport": {"width": 1440, "height": 900}},
    "1920x1080": {"viewport": {"width": 1920, "height": 1080}},
    "phone-390x844": {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "device_scale_factor": 2},
}
shared = {}  # what one test leaves the next: the run's id and its page's URL


@pytest.fixture(scope="module")
def server(tmp_path_factory, cifar_dir):
    """`streamlit run app.py` with a teacher PIN and fresh runs; stopped at the end of the module."""
    tmp = tmp_path_factory.mktemp("classroom")
    env = {"LENET_TEACHER_PIN": PIN, "LENET_CHECKPOINT": str(tmp / "no-such.pt")}
    with streamlit_server(tmp, cifar_dir, start_timeout=60, env=env) as running:
        yield running




@pytest.fixture
def new_page(browser):
    """A page in a fresh browser context (a separate session: a second person); closed after the test."""
    contexts = []

    def make(**options):
        context = browser.new_context(**{"viewport": {"width": 1600, "height": 1000}, **options})
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


def main_area(page):
    return page.locator('[data-testid="stMain"]')


def open_sidebar(page) -> None:
    """Open the sidebar where it starts collapsed (a phone, presentation mode)."""
    sidebar = page.locator('[data-testid="stSidebar"]')
    sidebar.wait_for(state="attached")
    if sidebar.get_attribute("data-collapsed") == "false":
        return
    page.locator('[data-testid="stExpandSidebarButton"]').click()
    page.locator('[data-testid="stSidebar"][data-collapsed="false"]').wait_for()


def close_sidebar(page) -> None:
    page.locator('[data-testid="stSidebarCollapseButton"]').click()
    page.locator('[data-testid="stSidebar"][data-collapsed="true"]').wait_for(state="attached")


def sign_in_as_teacher(page) -> None:
    open_sidebar(page)
    sidebar = page.locator('[data-testid="stSidebar"]')
    sidebar.get_by_text("Teacher", exact=True).click()
    sidebar.get_by_label("Teacher PIN").fill(PIN)
    sidebar.get_by_role("button", name="Sign in").click()
    sidebar.get_by_text("You are the teacher").wait_for()


def screenshot(page, name: str) -> None:
    """The whole page: the viewport is stretched to the main area's height first (it scrolls inside the page)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size
    height = page.evaluate("document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": size["width"], "height": max(size["height"], min(height, 8000))})
    page.wait_for_timeout(500)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
    page.set_viewport_size(size)


def assert_no_errors(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, page.locator('[data-testid="stException"]').all_inner_texts()
    assert page.locator('[data-testid="stAlertContentError"]').all_inner_texts() == []


def test_a_fresh_servers_first_page_lists_only_the_page_titles(new_page, server):
    page = new_page()
    page.goto(server.url)
    page.get_by_text("The five steps").wait_for()
    navigation = page.locator('[data-testid="stSidebarNav"]')
    navigation.wait_for()
    links = [text.strip().splitlines()[-1] for text in navigation.locator("a").all_inner_texts()]  # after the icon's name
    assert links == TITLES, links  # never "train", "_classroom", ...: the files of pages/


def test_the_teacher_trains_and_a_student_watches_live_without_controls(new_page, server):
    teacher = new_page()
    teacher.goto(f"{server.url}/train")
    teacher.get_by_text("The teacher controls the runs").wait_for()
    assert teacher.get_by_role("button", name="Start training").count() == 0  # not until the PIN
    sign_in_as_teacher(teacher)
    teacher.get_by_role("spinbutton", name="Training images").fill("2000")
    teacher.get_by_role("spinbutton", name="Epochs").fill("300")
    teacher.get_by_role("spinbutton", name="Epochs").press("Tab")
    teacher.get_by_text(re.compile(r"About .+ on this machine \(2,000 images × 300 epochs\)")).first.wait_for()  # redrawn as it changes
    teacher.get_by_role("button", name="Start training").click()
    # A run estimated over 5 minutes asks first (the estimate depends on the machine): confirm when it does.
    live = teacher.get_by_text(re.compile(r"step [\d,]+ of [\d,]+ · [\d,]+ images/s"))
    confirm = teacher.get_by_role("button", name="Start anyway")
    live.or_(confirm).first.wait_for(timeout=240_000)
    if confirm.count():
        confirm.click()
    live.first.wait_for(timeout=240_000)
    shared["train_url"] = teacher.url
    run_id = re.search(r"[?&]run=([^&]+)", teacher.url).group(1)
    shared["run"] = run_id

    student = new_page()
    student.goto(f"{server.url}/train")
    student.get_by_text(re.compile(r"step [\d,]+ of [\d,]+ · [\d,]+ images/s")).first.wait_for()
    main_area(student).locator('[data-testid="stVegaLiteChart"]').nth(1).wait_for()  # the loss curve and the accuracy
    student.get_by_text("conv1's 6 filters").wait_for(timeout=30_000)  # the live inside view
    assert main_area(student).locator("figure.lv-tile").count() == 10
    assert main_area(student).get_by_role("button", name="Stop").count() == 0
    assert student.get_by_role("button", name="Start training").count() == 0
    assert main_area(student).get_by_role("button", name="Resume").count() == 0
    assert_no_errors(student)
    screenshot(student, "student-live")
    screenshot(teacher, "teacher-live")

    main_area(teacher).get_by_role("button", name="Stop").click()
    teacher.get_by_text(re.compile(r"Stopped at step [\d,]+")).first.wait_for(timeout=15_000)
    student.get_by_text(re.compile(r"Stopped at step [\d,]+")).first.wait_for(timeout=15_000)  # the student's page follows
    student.get_by_text(re.compile(r"Started by teacher at .+ · stopped by teacher at")).first.wait_for()
    assert main_area(student).get_by_role("button", name="Resume").count() == 0
    teacher.get_by_role("button", name="Resume").wait_for()
    screenshot(student, "student-stopped")
    # The training process started without running app.py again (it used to: a warning per page, in the server's log).
    log = server.log.read_text()
    assert "ScriptRunContext" not in log and "Traceback" not in log, log[-3000:]


def test_links_restore_presentation_mode_the_preset_and_the_run(new_page, server):
    assert "run" in shared, "needs the run of the test before"
    # Presentation mode and the run, for a student opening the teacher's link: no code, no form, large type.
    student = new_page()
    student.goto(f"{server.url}/train?present=1&run={shared['run']}")
    student.get_by_text(re.compile(r"Stopped at step [\d,]+")).first.wait_for()
    assert student.get_by_text("PyTorch code").count() == 0
    # The run's status line in large type, once the page has settled (a rerun may still be drawing it on a busy machine).
    student.wait_for_function("""() => [...document.querySelectorAll('[data-testid="stMain"] p')]
        .some(p => /Stopped at step [\\d,]+/.test(p.innerText) && parseFloat(getComputedStyle(p).fontSize) >= 20)""",
                              timeout=15_000)
    # The run picker's choice in large type too (Streamlit draws it in an input of its own, 14 px by default).
    picker = student.locator('[data-testid="stMain"] [data-testid="stSelectbox"] input').first
    assert float(picker.evaluate("e => parseFloat(getComputedStyle(e).fontSize)")) >= 20
    screenshot(student, "present-student")
    # The sidebar's toggle shows presentation mode on, and leaving it brings the code back.
    open_sidebar(student)
    student.locator('[data-testid="stSidebar"]').get_by_text("Presentation mode").click()
    main_area(student).get_by_text("PyTorch code").wait_for()
    assert "present=1" not in student.url

    # The preset and its settings, for the teacher in a new browser.
    teacher = new_page()
    teacher.goto(f"{server.url}/train?preset=best&epochs=7&run={shared['run']}")
    sign_in_as_teacher(teacher)
    teacher.get_by_role("spinbutton", name="Epochs").wait_for()
    assert teacher.get_by_role("spinbutton", name="Epochs").input_value() == "7"
    teacher.get_by_text("The most LeNet-5 gives").wait_for()  # the note of the preset "best"
    assert "preset=best" in teacher.url and "epochs=7" in teacher.url and f"run={shared['run']}" in teacher.url
    assert_no_errors(teacher)


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("screen", list(SCREENS))
def test_the_train_page_fits_every_screen_without_overlaps_or_cut_text(new_page, server, screen, scheme):
    assert "run" in shared, "needs the run of the tests before"
    page = new_page(**SCREENS[screen], color_scheme=scheme)
    page.goto(f"{server.url}/train?run={shared['run']}")
    sign_in_as_teacher(page)
    if SCREENS[screen].get("is_mobile"):
        close_sidebar(page)  # on a phone it covers the page
    page.get_by_text("All runs").wait_for()
    page.get_by_text(re.compile(r"Stopped at step [\d,]+")).first.wait_for()
    main_area(page).locator('[data-testid="stVegaLiteChart"]').nth(1).wait_for()
    page.wait_for_timeout(1500)  # charts and fonts settle
    found = layout_problems(page, blocks=NEIGHBOURS)
    screenshot(page, f"train-{screen}-{scheme}")
    assert found == [], found
    background = page.evaluate("getComputedStyle(document.querySelector('[data-testid=\"stApp\"]')).backgroundColor")
    dark = sum(int(v) for v in re.findall(r"\d+", background)[:3]) < 3 * 100
    assert dark == (scheme == "dark"), background
    assert_no_errors(page)


def test_the_layout_check_sees_an_overlap_and_cut_text(new_page, server):
    """The check above must be able to fail: an element pulled over its neighbour and a line too long for its box."""
    page = new_page()
    page.goto(f"{server.url}/train")
    page.get_by_text("All runs").wait_for()
    page.wait_for_timeout(1000)
    assert layout_problems(page, blocks=NEIGHBOURS) == []
    page.evaluate("""() => {
      const main = document.querySelector('[data-testid="stMain"]');
      const title = main.querySelector('h1').closest('[data-testid="stElementContainer"]');
      title.nextElementSibling.style.marginTop = '-40px';
      const line = main.querySelector('[data-testid="stCaptionContainer"]');
      line.style.cssText = 'width: 60px; overflow: hidden; white-space: nowrap';
    }""")
    found = layout_problems(page, blocks=NEIGHBOURS)
    overlaps, cut = [p for p in found if p.startswith("overlap: ")], [p for p in found if p.startswith("cut: ")]
    assert overlaps and all('"Train' in p for p in overlaps), found
    assert cut and all("The teacher controls the runs" in p for p in cut) and len(found) == len(overlaps) + len(cut), found

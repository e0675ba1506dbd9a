# Two commands do all the set-up: `make run` (the app) and `make test` (ruff and the whole test suite).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run class test cli clean

$(VENV)/.app: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.app requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# `make run` answers this computer only; `make class` answers the classroom's network, and only with a teacher PIN
# (LENET_TEACHER_PIN), so that nobody else on the network controls the runs.
run: $(VENV)/.app
	$(PY) -m streamlit run app.py --server.address 127.0.0.1

class: $(VENV)/.app
	@test -n "$$LENET_TEACHER_PIN" || { echo "make class: set a teacher PIN first, e.g. LENET_TEACHER_PIN=4821 make class" >&2; exit 2; }
	$(PY) -m streamlit run app.py --server.address 0.0.0.0

test: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache test-artifacts

# `make messages` (after changing any text the app shows): extract every _(), N_() and ngettext() of app.py and pages/
# (babel.cfg) into locale/app.pot, then bring each language's catalog, locale/<lang>/LC_MESSAGES/app.po, up to date:
# new messages arrive untranslated, changed ones fuzzy, and tests/test_i18n.py fails until a translator fills them in.
# A new language: `$(VENV)/bin/pybabel init -i locale/app.pot -d locale -D app -l xx`, plus a line in pages/_i18n.py.
.PHONY: messages
messages: $(VENV)/.app
	$(VENV)/bin/pybabel extract -F babel.cfg -k _ -k N_ -k ngettext:1,2 --add-location=file --sort-by-file --no-wrap \
		--project="LeNet-5 on CIFAR-10" -o locale/app.pot .
	$(VENV)/bin/pybabel update -i locale/app.pot -d locale -D app --no-wrap --ignore-obsolete

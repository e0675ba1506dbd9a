"""N_() marks English text that the app shows in the reader's language: `pybabel extract` finds it in the files
babel.cfg names, and the pages translate it where they show it. The engine and the command line stay English."""


def N_(text: str) -> str:
    return text

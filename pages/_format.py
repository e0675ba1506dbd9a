"""Numbers and words as the pages show them, in the session's language: durations, numbers, percentages, percentage
points, articles, times. Each takes the language as an argument (None: the session's), so tests can ask for one.

Numbers go through babel.numbers (the locale's digits, grouping and decimal sign); durations are built from
catalog messages ("2 min 30 s", "2분 30초"), as babel.dates.format_timedelta gives only its largest unit.
"""

from datetime import datetime

from babel.numbers import format_decimal, format_percent

from pages._i18n import DEFAULT, N_, babel_locale, gettext_in, language


def duration(seconds: float | None, language_code: str | None = None) -> str:
    if seconds is None:
        return "–"
    seconds = round(seconds)
    if seconds < 60:
        return gettext_in(language_code, N_("{seconds} s")).format(seconds=seconds)
    if seconds < 3600:
        return gettext_in(language_code, N_("{minutes} min {seconds:02d} s")).format(minutes=seconds // 60, seconds=seconds % 60)
    return gettext_in(language_code, N_("{hours} h {minutes:02d} min")).format(hours=number(seconds // 3600, language_code=language_code),
                                                                         minutes=seconds % 3600 // 60)


def number(value: float, digits: int = 0, language_code: str | None = None) -> str:
    """1234.5 -> "1,234" (digits=0), "1,234.5" (digits=1): grouped as the language groups digits."""
    pattern = "#,##0" + ("." + "0" * digits if digits else "")
    return format_decimal(value, format=pattern, locale=babel_locale(language_code))


def percent(fraction: float | None, digits: int = 1, language_code: str | None = None) -> str:
    """0.7473 -> "74.7%"; None -> "–". One number of digits everywhere, so tables never mix 49.56% and 61.3%."""
    if fraction is None:
        return "–"
    pattern = "#,##0" + ("." + "0" * digits if digits else "") + "%"
    return format_percent(fraction, format=pattern, locale=babel_locale(language_code))


def points(difference: float, language_code: str | None = None) -> str:
    """A difference of two percentages, in percentage points: 0.647 -> "+64.7 points" ("+64.7%p" in Korean)."""
    value = difference * 100
    signed = ("+" if value >= 0 else "-") + number(abs(value), 1, language_code)
    return gettext_in(language_code, N_("{value} points")).format(value=signed)


def with_article(noun: str, language_code: str | None = None) -> str:
    """ "an airplane", "a cat": the article an English reader expects before a class name; other languages (Korean
    has no articles) get the noun as it is."""
    if (language_code or language()) != DEFAULT:
        return noun
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def local_time(iso: str) -> str:
    """An ISO time as this server's clock reads it: "14:02:11" today, "2026-03-04 14:02" another day; unreadable: as is."""
    try:
        moment = datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return str(iso)
    moment = moment.astimezone() if moment.tzinfo else moment
    if moment.date() == datetime.now().date():
        return moment.strftime("%H:%M:%S")
    return moment.strftime("%Y-%m-%d %H:%M")

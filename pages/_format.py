"""Numbers and words as the pages show them: durations, percentages, percentage points, articles, times."""

from datetime import datetime


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def percent(fraction: float | None, digits: int = 1) -> str:
    """0.7473 -> "74.7%"; None -> "–". One number of digits everywhere, so tables never mix 49.56% and 61.3%."""
    return "–" if fraction is None else f"{fraction:.{digits}%}"


def points(difference: float) -> str:
    """A difference of two percentages, in percentage points: 0.647 -> "+64.7 points"."""
    return f"{difference * 100:+.1f} points"


def with_article(noun: str) -> str:
    """ "an airplane", "a cat": the article a reader expects before a class name."""
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

"""A drill report as PDF, rendered from the same HTML by WeasyPrint (no network: nothing is fetched)."""

from __future__ import annotations

import logging


def html_to_pdf(page: str) -> bytes:
    """The PDF of a self-contained HTML page. Fonts: the system's (a CJK font for zh-CN)."""
    import weasyprint  # noqa: PLC0415 -- heavy; only PDF output needs it

    # WeasyPrint warns about its font subsetter on every run; the PDF is the same either way.
    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)

    def no_fetch(url: str, *args: object, **kwargs: object) -> dict[str, object]:
        raise ValueError(f"the report must not fetch {url}")

    return bytes(weasyprint.HTML(string=page, url_fetcher=no_fetch).write_pdf())

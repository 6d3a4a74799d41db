"""Reading the project's HTML pages as a browser would: what they load, the graph's nodes, and what
headless Chromium logs to its console when it opens them."""

from __future__ import annotations

import subprocess
from html.parser import HTMLParser
from pathlib import Path


class ParsedPage(HTMLParser):
    """What a browser would act on: tags, every attribute value, the nodes of the graph."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.links: list[str] = []
        self.nodes: dict[str, str] = {}
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = dict(attrs)
        self.links += [value for name, value in attrs if name in ("src", "href") and value]
        if tag == "g" and "data-node" in values:
            self.nodes[values["data-node"]] = values["data-status"]


def loads_nothing(parsed: ParsedPage) -> bool:
    """No script, and every link is a data: image or an anchor in the page."""
    return "script" not in parsed.tags and all(
        link.startswith(("data:image/png", "#")) for link in parsed.links
    )


def console_of(page_path: Path, profile: Path) -> tuple[str, list[str]]:
    """Headless Chromium's DOM of the page once loaded, and every console message it logged (an
    uncaught error, a load the page's content policy blocked)."""
    command = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0"]
    command += [f"--user-data-dir={profile}", "--dump-dom", page_path.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=180)
    return done.stdout, [line for line in done.stderr.splitlines() if ":CONSOLE" in line]

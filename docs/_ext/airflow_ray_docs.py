"""Sphinx directives of the airflow-ray docs: pages generated from the code, and screenshots.

- ``ray-config``: the ``[ray]`` section, from ``get_provider_info()["config"]``;
- ``ray-cli``: the ``airflow-ray`` command line, from its argument parser (``cli.build_parser``);
- ``screenshot``: an image of ``_static/screenshots/`` when the file exists, else nothing (the
  screenshots are made apart from the docs, and a build without them must still pass).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

SCREENSHOTS = Path(__file__).resolve().parents[1] / "_static" / "screenshots"


class _Generated(SphinxDirective):
    """Parses the Markdown that ``lines()`` makes as if it were written in the page (a MyST page:
    its directives' content is read as MyST Markdown)."""

    def lines(self) -> list[str]:
        raise NotImplementedError

    def run(self) -> list[nodes.Node]:
        container = nodes.container()
        self.state.nested_parse(
            StringList(self.lines(), source="<generated>"), self.content_offset, container
        )
        return list(container.children)


def _literal(value: str) -> str:
    return f"`{value}`" if value else "(empty)"


class RayConfigDirective(_Generated):
    """The ``[ray]`` options, as the provider declares them to Airflow."""

    def lines(self) -> list[str]:
        from airflow_ray.get_provider_info import get_provider_info

        section = get_provider_info()["config"]["ray"]
        out = [section["description"], ""]
        for name, option in sorted(section["options"].items()):
            out += [
                f"(config-{name})=",
                f"## `{name}`",
                "",
                option["description"],
                "",
                f"- type: {option['type']}",
                f"- default: {_literal(option['default'])}",
                f"- example: {_literal(option['example'])}",
                f"- environment variable: `AIRFLOW__RAY__{name.upper()}`",
                f"- since: {option['version_added']}",
                "",
            ]
        return out


def _usage(parser: argparse.ArgumentParser) -> list[str]:
    return ["```text", *parser.format_usage().strip().splitlines(), "```", ""]


def _arguments(parser: argparse.ArgumentParser) -> list[str]:
    out = []
    for action in parser._actions:  # argparse has no public list of a parser's arguments
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        name = ", ".join(action.option_strings) or action.dest
        if action.metavar and action.option_strings:
            name += f" {action.metavar}"
        text = action.help or ""
        if action.choices:
            text = f"one of {', '.join(f'`{choice}`' for choice in action.choices)}. {text}".strip()
        if action.default not in (None, False) and "default" not in text:
            text += f" (default `{action.default}`)"
        out += [f"`{name}`", f": {text or '(no description)'}", ""]
    return out


class RayCliDirective(_Generated):
    """Each command group of ``airflow-ray``: its usage and arguments."""

    def lines(self) -> list[str]:
        from airflow_ray.cli import build_parser

        parser = build_parser()
        out = [parser.description or "", "", *_usage(parser)]
        for action in parser._actions:
            if not isinstance(action, argparse._SubParsersAction):
                continue
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, sub in action.choices.items():
                about = helps.get(name, "")
                out += [f"## `airflow-ray {name}`", "", f"{about[:1].upper()}{about[1:]}.", ""]
                out += _usage(sub) + _arguments(sub)
        return out


class ScreenshotDirective(SphinxDirective):
    """``screenshot:: name.png`` with its alt text as content: the image if it was made."""

    required_arguments = 1
    has_content = True
    option_spec = {"width": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        name = self.arguments[0]
        if not (SCREENSHOTS / name).is_file():
            return []
        # The content is the caption, read as the page's Markdown; its text is the image's alt.
        body = nodes.container()
        self.state.nested_parse(self.content, self.content_offset, body)
        paragraphs = [child for child in body.children if isinstance(child, nodes.paragraph)]
        caption = nodes.caption("", *paragraphs[0].children) if paragraphs else nodes.caption(name, name)
        # A leading / makes the path relative to the docs' root, whatever folder the page is in.
        image = nodes.image(uri=f"/_static/screenshots/{name}", alt=caption.astext())
        if "width" in self.options:
            image["width"] = self.options["width"]
        return [nodes.figure("", image, caption)]


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("ray-config", RayConfigDirective)
    app.add_directive("ray-cli", RayCliDirective)
    app.add_directive("screenshot", ScreenshotDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

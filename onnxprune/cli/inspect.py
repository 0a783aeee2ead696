"""`onnxprune inspect IN`: the channel spaces, what is coupled, what is pinned and why."""

from __future__ import annotations

import json

import click


@click.command("inspect")
@click.argument("source", metavar="IN")
@click.option("--json", "as_json", is_flag=True, help="Print the channel spaces as JSON.")
@click.option("--verbose", "-v", is_flag=True, help="List every member and every pin reason.")
def command(source, as_json, verbose) -> None:
    """List the channel spaces of IN: size, members, prunable or pinned and why."""
    from ..deps import build_channel_graph
    from ..io.model import Model
    from ..report.summary import inspect_table

    graph = build_channel_graph(Model.load(source))
    spaces = [space.to_dict() for space in graph.spaces]
    click.echo(json.dumps(spaces, indent=2) if as_json else inspect_table(spaces, verbose))

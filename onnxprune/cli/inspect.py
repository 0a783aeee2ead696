"""`onnxprune inspect IN`: the channel spaces, what is coupled, what is pinned and why."""

from __future__ import annotations

import json

import click

from .common import check_side_outputs


@click.command("inspect")
@click.argument("source", metavar="IN")
# `--json` alone (its first form, a flag) still prints the JSON: the value is optional and defaults to "-".
@click.option("--json", "json_path", metavar="PATH", is_flag=False, flag_value="-", default=None,
              help="Write the channel spaces as JSON to PATH ('-', or --json alone: standard output).")
@click.option("--verbose", "-v", is_flag=True, help="List every member and every pin reason.")
def command(source, json_path, verbose) -> None:
    """List the channel spaces of IN: size, members, prunable or pinned and why."""
    from ..api import write_json
    from ..deps import build_channel_graph
    from ..io.model import Model
    from ..report.summary import inspect_table

    to_file = json_path not in (None, "-")
    if to_file:
        check_side_outputs({"--json": json_path}, [source])
    graph = build_channel_graph(Model.load(source))
    spaces = [space.to_dict() for space in graph.spaces]
    if json_path == "-":
        click.echo(json.dumps(spaces, indent=2))
        return
    if to_file:
        write_json(spaces, json_path)
    click.echo(inspect_table(spaces, verbose))

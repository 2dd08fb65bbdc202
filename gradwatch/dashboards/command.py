"""``gradwatch dashboards generate|push``: the command-line side of the dashboards package."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from gradwatch.dashboards import generate_all, write_all
from gradwatch.dashboards.push import DEFAULT_FOLDER, PushError, push

TOKEN_ENV = "GRAFANA_TOKEN"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``generate`` and ``push`` subcommands, on the ``dashboards`` parser."""
    actions = parser.add_subparsers(dest="dashboards_command", metavar="ACTION")
    generate = actions.add_parser(
        "generate",
        help="write the dashboard JSON files",
        description="Build the gradwatch Grafana dashboards from code and write them as JSON files.",
    )
    generate.add_argument(
        "--output", type=Path, default=Path("dashboards"), metavar="DIR", help="folder to write (default: ./dashboards)"
    )
    send = actions.add_parser(
        "push",
        help="create or update the dashboards in a Grafana",
        description=(
            "Create the folder (when missing) and create or overwrite the gradwatch dashboards by uid in a "
            "Grafana, over its HTTP API. Pushing again updates the same dashboards. The token is a Grafana "
            f"service account token with the Editor role; prefer the {TOKEN_ENV} environment variable to "
            "keep it out of shell history."
        ),
    )
    send.add_argument("--url", required=True, help="Grafana base URL, e.g. http://grafana:3000")
    send.add_argument(
        "--token", default=None, help=f"Grafana API token (default: the {TOKEN_ENV} environment variable)"
    )
    send.add_argument("--folder", default=DEFAULT_FOLDER, help="folder title (default: %(default)s)")
    send.add_argument("--timeout", type=float, default=10.0, help="seconds per HTTP request (default: %(default)s)")


def run_dashboards(args: argparse.Namespace) -> int:
    """Run ``gradwatch dashboards ...``; returns the exit status."""
    if args.dashboards_command == "generate":
        for path in write_all(args.output):
            print(path)
        return 0
    if args.dashboards_command == "push":
        token = args.token if args.token is not None else os.environ.get(TOKEN_ENV, "")
        try:
            pushed = push(args.url, token, generate_all(), folder=args.folder, timeout=args.timeout)
        except PushError as exc:
            print(f"gradwatch dashboards push: {exc}", file=sys.stderr)
            return 1
        for item in pushed:
            print(f"{item.uid} v{item.version} {item.title} {item.url}")
        return 0
    print("gradwatch dashboards: choose an action: generate or push (see --help)", file=sys.stderr)
    return 2

"""The ``gradwatch`` command: ``serve`` the aggregator, or run the ``demo``."""

from __future__ import annotations

import argparse
import errno
import logging
import sys

from gradwatch import __version__
from gradwatch.wire import DEFAULT_PORT


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be between 0 and 65535, got {value}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gradwatch",
        description=(
            "Watch PyTorch training while it runs. Start the aggregator with 'gradwatch serve', add "
            "gradwatch.watch(model, optimizer, run=...) to a training script, and read diagnoses at "
            "/v1/runs/<run>/diagnoses or in Prometheus at /metrics. 'gradwatch demo' shows it all at once."
        ),
    )
    parser.add_argument("--version", action="version", version=f"gradwatch {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the aggregator (HTTP API, /metrics) on Ray",
        description=(
            "Run the aggregator: a Ray actor holding every run's state, behind an HTTP API. By default it "
            "starts a private local Ray instance and stops it on exit; --address joins an existing cluster, "
            "where the aggregator actor is detached and keeps its state across restarts of this command."
        ),
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    serve.add_argument("--port", type=_port, default=DEFAULT_PORT, help="port to listen on (default: %(default)s)")
    serve.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join, e.g. 'auto' or 'ray://head:10001' (default: start a local one)",
    )
    serve.add_argument("--config", default=None, metavar="FILE", help="TOML file with rule thresholds and limits")
    serve.add_argument(
        "--alertmanager",
        action="append",
        default=[],
        metavar="URL",
        help="push each diagnosis to this Alertmanager the moment it fires (repeatable, e.g. for an HA pair)",
    )
    serve.add_argument("--name", default="default", help="aggregator name, for several services on one Ray cluster")
    serve.add_argument(
        "--shards",
        type=_positive_int,
        default=1,
        help="aggregator actors to spread the runs over (a stable hash of the run name picks one); "
        "more than 1 when one core cannot keep up, on a multi-node Ray cluster (default: 1)",
    )
    access = serve.add_argument_group("access control and TLS (see docs/operations.md)")
    access.add_argument(
        "--token-file",
        default=None,
        metavar="PATH",
        help="require 'Authorization: Bearer <token>' on ingest and the API, the token read from PATH "
        "(default: $GRADWATCH_TOKEN if set)",
    )
    access.add_argument(
        "--insecure",
        action="store_true",
        help="allow listening on a non-loopback address without a token (anyone who reaches it can read and write)",
    )
    access.add_argument("--protect-metrics", action="store_true", help="require the token on /metrics too")
    access.add_argument("--tls-cert", default=None, metavar="PEM", help="serve HTTPS with this certificate (chain)")
    access.add_argument("--tls-key", default=None, metavar="PEM", help="private key of --tls-cert")
    access.add_argument(
        "--state-dir",
        default=None,
        metavar="DIR",
        help="where the aggregator snapshots its state, to restore it after a restart "
        "(default: a private temporary directory)",
    )
    serve.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    demo = commands.add_parser(
        "demo",
        help="train small models that go wrong and show the diagnoses",
        description=(
            "Start the aggregator in-process and train four small models on the CPU: one with vanishing "
            "gradients, one with exploding gradients, one that hits NaN, and a healthy control. Each diagnosis "
            "is printed as it fires. Exits 0 when every expected diagnosis fired and the control stayed quiet."
        ),
    )
    demo.add_argument("--port", type=_port, default=0, help="port for the demo service (default: any free port)")
    demo.add_argument("--steps", type=int, default=300, help="optimizer steps per model (default: %(default)s)")
    demo.add_argument("--keep-serving", action="store_true", help="keep the service up after the demo, until Ctrl-C")
    evaluate = commands.add_parser(
        "eval",
        help="score the rules on a labelled scenario suite (recall, false alarms, delay)",
        description=(
            "Train every scenario of a labelled suite through the real path (agent, HTTP, aggregator on a "
            "local Ray) and print, per symptom, recall, false alarms and detection delay in steps."
        ),
    )
    from gradwatch.evaluation.command import add_arguments

    add_arguments(evaluate)
    dashboards = commands.add_parser(
        "dashboards",
        help="generate the Grafana dashboards, or push them to a Grafana",
        description="Grafana dashboards as code: 'generate' writes the JSON, 'push' uploads it over Grafana's API.",
    )
    from gradwatch.dashboards.command import add_arguments as add_dashboard_arguments

    add_dashboard_arguments(dashboards)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "demo":
        from gradwatch.demo import run_demo

        return run_demo(port=args.port, steps=args.steps, keep_serving=args.keep_serving)
    if args.command == "eval":
        from gradwatch.evaluation.command import run_eval

        shown = " ".join(["gradwatch", *(argv if argv is not None else sys.argv[1:])])
        return run_eval(args, command=shown)
    if args.command == "dashboards":
        from gradwatch.dashboards.command import run_dashboards

        return run_dashboards(args)
    parser.print_help()
    return 2


def _serve(args: argparse.Namespace) -> int:
    from gradwatch.service.config import ConfigError, load_config
    from gradwatch.service.server import Service, serve_forever

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"gradwatch serve: {exc}", file=sys.stderr)
        return 2
    if args.alertmanager:
        from pydantic import ValidationError

        from gradwatch.service.config import AlertingConfig

        urls = [*config.alerting.alertmanagers, *args.alertmanager]
        try:
            alerting = AlertingConfig.model_validate({**config.alerting.model_dump(), "alertmanagers": urls})
        except ValidationError as exc:
            print(
                f"gradwatch serve: --alertmanager: {exc.errors()[0]['msg'].removeprefix('Value error, ')}",
                file=sys.stderr,
            )
            return 2
        config = config.model_copy(update={"alerting": alerting})
    from gradwatch.service.auth import AuthError, listen_policy_error, load_token, ssl_context

    try:
        token = load_token(args.token_file)
        tls = ssl_context(args.tls_cert, args.tls_key)
    except AuthError as exc:
        print(f"gradwatch serve: {exc}", file=sys.stderr)
        return 2
    refusal = listen_policy_error(args.host, token, args.insecure)
    if refusal is not None:
        print(f"gradwatch serve: {refusal}", file=sys.stderr)
        return 2
    if args.protect_metrics and token is None:
        print(
            "gradwatch serve: --protect-metrics needs a token (--token-file PATH or $GRADWATCH_TOKEN)", file=sys.stderr
        )
        return 2
    if args.state_dir:
        snapshots = config.snapshots.model_copy(update={"dir": args.state_dir})
        config = config.model_copy(update={"snapshots": snapshots})
    service = Service(
        config,
        host=args.host,
        port=args.port,
        address=args.address,
        name=args.name,
        shards=args.shards,
        token=token,
        protect_metrics=args.protect_metrics,
        ssl_context=tls,
    )
    try:
        serve_forever(service)
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            raise
        print(f"gradwatch serve: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

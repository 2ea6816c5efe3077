"""Command-line options of `boutique up` (kept free of heavy imports so `boutique serve` starts fast)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `boutique up`."""
    parser.add_argument(
        "--frontend-port", type=int, default=8080, help="port of the shop web site (default 8080)"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("BOUTIQUE_DATA_DIR", ".boutique")),
        help="where logs, mails and state go (default ./.boutique or $BOUTIQUE_DATA_DIR)",
    )
    parser.add_argument(
        "--registry-port", type=int, default=7600, help="port of the service registry (default 7600)"
    )
    parser.add_argument(
        "--discovery",
        choices=("registry", "static"),
        default="registry",
        help="registry (default): services register and find each other by name; "
        "static: fixed *_SERVICE_ADDR lists, no registry",
    )
    parser.add_argument(
        "--redis",
        choices=("auto", "on", "off"),
        default="auto",
        help="run redis-server for the carts: auto (default) when cart has replicas and redis-server is installed",
    )
    parser.add_argument(
        "--no-observatory",
        dest="observatory",
        action="store_false",
        help="do not run the observatory (the telemetry backend)",
    )
    parser.add_argument(
        "--observatory-ports",
        default="4317,4318,9411,16686",
        help="observatory ports OTLP/gRPC,OTLP/HTTP,Zipkin,UI (default 4317,4318,9411,16686)",
    )
    parser.add_argument("--replicas", default="", help="instances per service, e.g. cart=3,currency=2")
    parser.add_argument("--no-load", dest="load", action="store_false", help="do not run the load generator")
    parser.add_argument("--users", type=int, default=10, help="simulated shoppers (default 10)")
    parser.add_argument(
        "--spawn-rate", type=float, default=1.0, help="shoppers started per second (default 1)"
    )
    parser.add_argument(
        "--ready-timeout", type=float, default=60.0, help="seconds to wait for SERVING (default 60)"
    )
    parser.add_argument(
        "--plain", action="store_true", help="print state changes as lines instead of a live table"
    )
    parser.add_argument(
        "--spawn",
        choices=("fork", "plain"),
        default="fork",
        help="fork (default, Linux): fork the registry and the services from one process that has imported "
        "what they need (faster start, less memory); plain: start each as an interpreter of its own",
    )

"""The `boutique` command: serve one service, start the whole shop, or generate load.

Each command imports what it runs when it runs (the parser imports only light modules), so that
`boutique --help`, the registry and the observatory do not pay for the mesh and gRPC, nor a service for
the code of the other commands.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from boutique import __version__
from boutique.asyncio_only import keep_trio_out
from boutique.shop.services import SERVICES, ServiceSpec


def _configure_logging(service: str, instance: str, level: str) -> None:
    """JSON log lines for this process (see boutique.mesh.logs; that module alone, not the whole mesh)."""
    from boutique.mesh.logs import configure_logging

    configure_logging(service, instance, level)


def _serve(args: argparse.Namespace) -> int:
    """Run one shop service in this process until SIGTERM/SIGINT."""
    from boutique.run.child import die_with_parent

    keep_trio_out()
    die_with_parent()
    spec = SERVICES[args.service]
    if spec.kind == "load":  # Locust in a child process: nothing of the mesh here
        from boutique.shop.loadgen import runner

        return runner.run_from_env()
    return _serve_service(spec, args.log_level)


def _serve_service(spec: ServiceSpec, log_level: str) -> int:
    """Run a gRPC or HTTP service of the shop with the mesh: settings, logs, tracing, flags, then serve."""
    import asyncio

    from boutique.mesh.config import ProcessInfo
    from boutique.mesh.flags import install_flags
    from boutique.mesh.settings import MeshSettings, SettingsError
    from boutique.mesh.stopping import AT_EXIT, process_stop
    from boutique.mesh.tracing import setup_tracing

    try:
        settings = MeshSettings.from_env()  # the one read of the environment: every part gets these
    except SettingsError as exc:
        print(f"boutique serve {spec.name}: {exc}", file=sys.stderr)
        return 2
    info = ProcessInfo.from_settings(spec.name, settings.process)
    settings = settings.for_process(spec.name, info.instance_id)  # one id for logs, health and served-by
    MeshSettings.install(settings)
    _configure_logging(spec.name, info.instance_id, log_level)
    tracing = setup_tracing(spec.name, info.instance_id, __version__, settings.tracing)
    install_flags(settings.flags, spec.name, info.instance_id)
    entry = spec.entry_point()
    stopping = process_stop()
    try:
        asyncio.run(entry())
    except (OSError, RuntimeError, ValueError) as exc:  # configuration and port problems: one clear line
        print(f"boutique serve {spec.name}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    finally:
        # export what is still queued before the process ends, within what is left of a signalled stop
        tracing.shutdown(stopping.allow(float("inf"), keep=AT_EXIT) if stopping.started else None)
    if stopping.started:
        _end_now(0)
    return 0


def _end_now(code: int) -> NoReturn:
    """End the process at once after a signalled stop. Servers, stores and clients are closed and the last
    spans delivered or spooled by now; tearing the interpreter down as well (0.3 s of module finalization,
    seconds on a busy machine) would only delay the exit that a platform stopping everything waits for."""
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def _registry(args: argparse.Namespace) -> int:
    """Run the embedded service registry in the foreground."""
    from boutique.run.child import die_with_parent

    keep_trio_out()
    die_with_parent()  # no orphan when the `up` that started it is killed
    import asyncio

    from boutique.mesh.registry.server import serve_registry

    _configure_logging("registry", f"registry-{os.getpid()}", args.log_level)
    token = args.token or os.environ.get("BOUTIQUE_REGISTRY_TOKEN") or None
    try:
        asyncio.run(serve_registry(args.host, args.port, token))
    except (OSError, ValueError) as exc:
        print(f"boutique registry: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def _observatory(args: argparse.Namespace) -> int:
    """Run the telemetry backend (receivers, store, query API) in the foreground."""
    from boutique.run.child import die_with_parent

    keep_trio_out()
    die_with_parent()  # no orphan when the `up` that started it is killed
    import asyncio

    from boutique.observatory.config import ObservatoryConfig, Ports, parse_age, parse_size
    from boutique.observatory.sampling.config import SamplingFlags, from_options
    from boutique.observatory.server import serve

    _configure_logging("observatory", f"observatory-{os.getpid()}", args.log_level)
    try:
        sampling_file = args.tail_sampling or os.environ.get("BOUTIQUE_TAIL_SAMPLING") or None
        sampling = SamplingFlags(
            errors=args.sample_errors,
            slower_than=args.sample_slower_than,
            percent=args.sample_percent,
            spans_per_second=args.sample_spans_per_second,
            attributes=tuple(args.sample_attribute),
            decision_wait=args.sample_decision_wait,
        )
        config = ObservatoryConfig(
            host=args.host,
            ports=Ports(args.otlp_grpc_port, args.otlp_http_port, args.zipkin_port, args.port),
            data_dir=args.data_dir,
            token=args.token or ObservatoryConfig.env_token(),
            max_body_bytes=parse_size(args.max_body),
            queue_spans=args.queue_spans,
            retention_seconds=parse_age(args.retention),
            retention_bytes=parse_size(args.max_size),
            memory_limit=args.memory_limit,
            registry_url=args.registry_url or os.environ.get("BOUTIQUE_REGISTRY_URL") or None,
            flags_file=args.flags_file or ObservatoryConfig.env_flags_file(),
            chaos_log=args.chaos_log,
            tail_sampling=from_options(Path(sampling_file) if sampling_file else None, sampling),
        )
        asyncio.run(serve(config))
    except (OSError, ValueError) as exc:
        print(f"boutique observatory: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def _flags(args: argparse.Namespace) -> int:
    """List, set or reset the shop's feature flags (see boutique.run.flags_command)."""
    from boutique.run.flags_command import run_flags

    return run_flags(args)


def _up(args: argparse.Namespace) -> int:
    """Start every service on this machine (see boutique.run)."""
    keep_trio_out()
    from boutique.run.up import run_up

    return run_up(args)


def _load(args: argparse.Namespace) -> int:
    """Run simulated shoppers against a frontend."""
    from boutique.shop.loadgen import runner

    return runner.run(args)


def _prometheus_config(args: argparse.Namespace) -> int:
    """Write prometheus.yml and targets.json from the registry; without --once, keep the targets current."""
    import asyncio
    import shlex

    from boutique.mesh.durations import parse_duration
    from boutique.mesh.prometheus_sd import (
        prometheus_duration,
        scrape_config,
        watch,
        write_atomically,
        write_once,
    )
    from boutique.mesh.registry.client import RegistryError
    from boutique.signals import stop_on_signals

    _configure_logging("prometheus-config", f"prometheus-config-{os.getpid()}", args.log_level)
    out: Path = args.out.absolute()
    config_path, targets_path = out / "prometheus.yml", out / "targets.json"
    registry_token = args.token or os.environ.get("BOUTIQUE_REGISTRY_TOKEN") or None
    status_token = os.environ.get("BOUTIQUE_STATUS_TOKEN") or None
    credentials = out / "status-token" if status_token else None
    try:
        refresh = parse_duration(args.refresh)
        if refresh <= 0:
            raise ValueError(f"--refresh {args.refresh!r} must be positive")
        config = scrape_config(
            targets_path,
            args.scrape_interval,
            refresh_interval=prometheus_duration(refresh),
            credentials_file=credentials,
        )
    except ValueError as exc:
        print(f"boutique prometheus-config: {exc}", file=sys.stderr)
        return 2
    try:
        if args.once:
            asyncio.run(write_once(args.registry, registry_token, targets_path))
        if credentials is not None and status_token is not None:
            write_atomically(credentials, status_token, mode=0o600)
        write_atomically(config_path, config)
    except RegistryError as exc:
        print(f"boutique prometheus-config: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"boutique prometheus-config: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {config_path}" + (f" and {targets_path}" if args.once else ""))
    print(f"run: prometheus --config.file={shlex.quote(str(config_path))}", flush=True)
    if args.once:
        return 0

    async def keep_current() -> None:
        stop = asyncio.Event()
        stop_on_signals(asyncio.get_running_loop(), stop.set)
        await watch(args.registry, registry_token, targets_path, refresh, stop)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(keep_current())
    return 0


def _chaos(args: argparse.Namespace) -> int:
    """Kill, stop or slow one process of a running `boutique up` (see boutique.run.chaos)."""
    from boutique.run.chaos import run_chaos

    return run_chaos(args)


def _add_chaos_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`boutique chaos kill|stop|slow SERVICE[/INSTANCE]`."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "target",
        metavar="SERVICE[/INSTANCE]",
        help="a service (its first running instance), service/instance, service/index or an instance id",
    )
    common.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("BOUTIQUE_DATA_DIR", ".boutique")),
        help="the data directory of the running `boutique up` (default ./.boutique or $BOUTIQUE_DATA_DIR)",
    )
    bounded = argparse.ArgumentParser(add_help=False)
    bounded.add_argument(
        "--for", dest="duration", default="30s", help="how long, e.g. 2s, 30s, 5m (default 30s, at most 10m)"
    )
    chaos = commands.add_parser(
        "chaos",
        help="process faults against a running `boutique up`: kill, stop or slow one instance",
        description="Faults for one process of the `boutique up` of --data-dir (only its processes). "
        "stop and slow always leave the process running at the end, even when this command is "
        "interrupted or killed. Every action is logged to <data-dir>/chaos.jsonl.",
    )
    actions = chaos.add_subparsers(dest="action", required=True)
    kill = actions.add_parser(
        "kill", parents=[common], help="kill -9 the instance; `up` restarts it (waits until it serves again)"
    )
    kill.add_argument("--no-wait", action="store_true", help="return once it is killed")
    kill.add_argument("--timeout", default="60s", help="how long to wait for it to serve again (default 60s)")
    actions.add_parser(
        "stop", parents=[common, bounded], help="SIGSTOP the instance for a while, then SIGCONT"
    )
    slow = actions.add_parser(
        "slow",
        parents=[common, bounded],
        help="throttle the instance's CPU with a SIGSTOP/SIGCONT duty cycle",
    )
    slow.add_argument("--cpu", default="25%", help="CPU share it keeps, from 1%% to 99%% (default 25%%)")
    chaos.set_defaults(func=_chaos)


def _scenario(args: argparse.Namespace) -> int:
    """List the guided failure scenarios, or run one against a running `boutique up`."""
    from boutique.run.scenarios.command import run_command

    return run_command(args)


def _add_scenario_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`boutique scenario list | run NAME [--check] [--duration 30s] [--data-dir DIR]`."""
    scenario = commands.add_parser(
        "scenario",
        help="guided failures: break one thing in a running `boutique up` and see where it shows",
    )
    actions = scenario.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="every scenario, with the fault it makes")
    run = actions.add_parser(
        "run",
        help="run one scenario against a running `boutique up`",
        description="Sets the scenario's faults, drives shoppers for --duration, shows where the evidence "
        "is in the observatory, then puts every flag and process back as it was (also on Ctrl-C).",
    )
    run.add_argument("name", help="the scenario (see `boutique scenario list`)")
    run.add_argument(
        "--check", action="store_true", help="assert that the observatory shows the evidence (exit 1 if not)"
    )
    run.add_argument("--duration", default="30s", help="how long the faults stay on (default 30s)")
    run.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("BOUTIQUE_DATA_DIR", ".boutique")),
        help="the data directory of the running `boutique up` (default ./.boutique or $BOUTIQUE_DATA_DIR)",
    )
    scenario.set_defaults(func=_scenario)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(prog="boutique", description=__doc__)
    parser.add_argument("--version", action="version", version=f"boutique {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run one service in the foreground")
    serve.add_argument("service", choices=sorted(SERVICES), help="which service")
    serve.add_argument("--log-level", default="INFO", help="log level (default INFO)")
    serve.set_defaults(func=_serve)

    registry = commands.add_parser("registry", help="run the embedded service registry (HTTP/JSON)")
    registry.add_argument(
        "--host", default=_bind_host(), help="bind address (default $BIND_HOST, else 127.0.0.1)"
    )
    registry.add_argument("--port", type=int, default=7600, help="port (default 7600)")
    registry.add_argument("--token", default="", help="bearer token; required when not on loopback")
    registry.add_argument("--log-level", default="INFO", help="log level (default INFO)")
    registry.set_defaults(func=_registry)

    observatory = commands.add_parser(
        "observatory",
        help="run the telemetry backend: OTLP and Zipkin receivers, store, Jaeger-compatible API",
    )
    observatory.add_argument(
        "--host", default=_bind_host(), help="bind address (default $BIND_HOST, else 127.0.0.1)"
    )
    observatory.add_argument("--port", type=int, default=16686, help="query API and UI port (default 16686)")
    observatory.add_argument("--otlp-grpc-port", type=int, default=4317, help="OTLP/gRPC port (default 4317)")
    observatory.add_argument("--otlp-http-port", type=int, default=4318, help="OTLP/HTTP port (default 4318)")
    observatory.add_argument("--zipkin-port", type=int, default=9411, help="Zipkin v2 port (default 9411)")
    observatory.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("BOUTIQUE_DATA_DIR", ".boutique")),
        help="where observatory.duckdb lives (default ./.boutique or $BOUTIQUE_DATA_DIR)",
    )
    observatory.add_argument(
        "--token", default="", help="bearer token (or BOUTIQUE_OBSERVATORY_TOKEN); required off loopback"
    )
    observatory.add_argument("--retention", default="24h", help="keep spans this long (default 24h)")
    observatory.add_argument("--max-size", default="1GB", help="keep the store under this size (default 1GB)")
    observatory.add_argument("--max-body", default="16MB", help="largest request body (default 16MB)")
    observatory.add_argument(
        "--registry-url",
        default=None,
        help="service registry whose processes the Mesh page shows (default: $BOUTIQUE_REGISTRY_URL)",
    )
    observatory.add_argument(
        "--flags-file",
        type=Path,
        default=None,
        help="flag file the Flags page shows and switches (default: $FLAGD_OFFLINE_FLAG_SOURCE_PATH)",
    )
    observatory.add_argument(
        "--chaos-log",
        type=Path,
        default=None,
        help="the chaos.jsonl of `boutique chaos` whose process faults the service charts mark (up passes its own)",
    )
    observatory.add_argument(
        "--memory-limit",
        default="128MB",
        help="DuckDB's memory (default 128MB); its trace-id index needs ~50 MB per million traces stored",
    )
    observatory.add_argument(
        "--queue-spans",
        type=int,
        default=100_000,
        help="spans waiting to be stored before 429 (default 100000)",
    )
    observatory.add_argument("--log-level", default="INFO", help="log level (default INFO)")
    _add_sampling_arguments(observatory)
    observatory.set_defaults(func=_observatory)

    from boutique.run.options import add_arguments as add_up_arguments

    up = commands.add_parser("up", help="start the whole shop on this machine")
    add_up_arguments(up)
    up.set_defaults(func=_up)

    from boutique.shop.loadgen.runner import add_arguments as add_load_arguments

    load = commands.add_parser("load", help="simulated shoppers against a frontend (Locust, headless)")
    add_load_arguments(load)
    load.set_defaults(func=_load)

    prometheus = commands.add_parser(
        "prometheus-config",
        help="write a Prometheus configuration whose targets come from the registry, and keep them current",
        description="Writes prometheus.yml and targets.json (file_sd) into --out. Scrapes send "
        "BOUTIQUE_STATUS_TOKEN, when set, as a bearer token (stored in --out/status-token).",
    )
    prometheus.add_argument(
        "--out",
        type=Path,
        default=Path(".boutique/prometheus"),
        help="directory of prometheus.yml and targets.json (default ./.boutique/prometheus)",
    )
    prometheus.add_argument(
        "--registry",
        default=os.environ.get("BOUTIQUE_REGISTRY_URL") or "http://127.0.0.1:7600",
        help="registry URL (default $BOUTIQUE_REGISTRY_URL or http://127.0.0.1:7600)",
    )
    prometheus.add_argument("--token", default="", help="registry bearer token (or BOUTIQUE_REGISTRY_TOKEN)")
    prometheus.add_argument(
        "--scrape-interval", default="15s", help="Prometheus scrape interval (default 15s)"
    )
    prometheus.add_argument("--refresh", default="2s", help="how often to poll the registry (default 2s)")
    prometheus.add_argument(
        "--once", action="store_true", help="write both files once and exit (fails if the registry is down)"
    )
    prometheus.add_argument("--log-level", default="INFO", help="log level (default INFO)")
    prometheus.set_defaults(func=_prometheus_config)
    _add_flags_parser(commands)
    _add_chaos_parser(commands)
    _add_scenario_parser(commands)
    return parser


def _add_flags_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`boutique flags list | set NAME VARIANT [--when key=value ...] [--percent P] | reset [NAME ...]`."""
    flags = commands.add_parser(
        "flags",
        help="list, set or reset the shop's feature flags (fault injection)",
        description="The flag file is --file, else $FLAGD_OFFLINE_FLAG_SOURCE_PATH, else <data dir>/flags.json "
        "(what `boutique up` uses). Running processes pick a change up within a second.",
    )
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="the data directory of `boutique up` (default ./.boutique or $BOUTIQUE_DATA_DIR)",
    )
    where.add_argument("--file", type=Path, default=None, help="the flag file itself")
    actions = flags.add_subparsers(dest="flags_command", required=True)
    actions.add_parser("list", parents=[where], help="every flag: variant, rule, last change, description")
    setter = actions.add_parser("set", parents=[where], help="set a flag to one of its variants")
    setter.add_argument("name", help="the flag (see `boutique flags list`)")
    setter.add_argument("variant", help="one of its variants")
    setter.add_argument(
        "--when",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="only evaluations whose attribute KEY is VALUE, e.g. caller=frontend (repeatable: all must match)",
    )
    setter.add_argument(
        "--percent", type=float, default=None, help="only this share of evaluations, 0 < P <= 100 (by trace)"
    )
    reset = actions.add_parser("reset", parents=[where], help="put flags back as shipped (default: all)")
    reset.add_argument("names", nargs="*", metavar="NAME", help="flags to reset (default: all)")
    flags.set_defaults(func=_flags)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `boutique` console script."""
    args = build_parser().parse_args(argv)
    with contextlib.suppress(BrokenPipeError):
        try:
            return int(args.func(args) or 0)
        except ValueError as exc:
            from boutique.mesh.settings import SettingsError  # loaded already by any command that raises it

            if not isinstance(exc, SettingsError):
                raise
            # e.g. BOUTIQUE_LOG_STREAM, read where any command sets up its logs
            print(f"boutique {args.command}: {exc}", file=sys.stderr)
            return 2
    return 0


def _add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    """The observatory's tail-sampling options (off unless one of them is given)."""
    group = parser.add_argument_group(
        "tail sampling",
        "Off unless --tail-sampling or a --sample-* policy is given. Each trace is held until its decision "
        "wait has passed since its first span, then kept if any policy keeps it; the rest is not stored. "
        "Counts per policy: GET /api/sampling on the query port.",
    )
    group.add_argument(
        "--tail-sampling",
        type=Path,
        default=None,
        metavar="FILE",
        help="YAML or JSON in the shape of the OpenTelemetry Collector's tail_sampling processor "
        "(decision_wait, num_traces, decision_cache, policies); the --sample-* flags add policies to it "
        "(default: $BOUTIQUE_TAIL_SAMPLING)",
    )
    group.add_argument("--sample-errors", action="store_true", help="keep every trace with an ERROR span")
    group.add_argument(
        "--sample-slower-than",
        metavar="DURATION",
        help="keep traces lasting at least this long, first span start to last span end (e.g. 500ms)",
    )
    group.add_argument(
        "--sample-percent",
        type=float,
        metavar="P",
        help="keep P%% of traces, chosen by a hash of the trace id (the same choice everywhere)",
    )
    group.add_argument(
        "--sample-spans-per-second",
        type=int,
        metavar="N",
        help="keep traces while this keeps at most N spans per second of the traces' own start time",
    )
    group.add_argument(
        "--sample-attribute",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keep traces with a span or resource attribute equal to VALUE, e.g. "
        "service.name=checkoutservice (repeatable)",
    )
    group.add_argument(
        "--sample-decision-wait",
        metavar="DURATION",
        help="how long after its first span a trace is decided (default 10s; the file's decision_wait)",
    )


def _bind_host() -> str:
    """The default bind address of the registry and the observatory: BIND_HOST, else loopback."""
    return os.environ.get("BIND_HOST", "").strip() or "127.0.0.1"


if __name__ == "__main__":
    sys.exit(main())

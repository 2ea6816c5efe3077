"""Start Locust headless as a child process with the shopper locustfile, and stop it on a signal.

Locust runs in its own process (and process group) so that gevent's monkey-patching never touches
the caller's process. Ctrl-C or SIGTERM reaches Locust once, as SIGTERM, its clean-shutdown path (it
prints the final summary and writes the CSV files); a second one kills it at once.
Its exit code is passed through unchanged: 0 after a clean stop, 1 when any request failed (Locust's
rule, so a script can tell a failing shop from a healthy one), 2 for a Locust error. Requests the shop
shed under overload (503 with Retry-After) are not failures: they have rows of their own, type SHED.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TypeVar
from urllib.parse import urlsplit

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_USERS = 10
DEFAULT_SPAWN_RATE = 2.0
DEFAULT_WAIT = "1-10"
STOP_GRACE_SECONDS = 30.0
LOCUSTFILE = Path(__file__).with_name("locustfile.py")
PARENT_PID_VARIABLE = "LOADGEN_PARENT_PID"
LOG_FORMAT_VARIABLE = "LOADGEN_LOG_FORMAT"  # "json": the locustfile logs as every other process does

T = TypeVar("T")
_RUN_TIME = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


@dataclass(frozen=True)
class LoadSettings:
    """Everything one load run needs, already validated."""

    url: str
    users: int = DEFAULT_USERS
    spawn_rate: float = DEFAULT_SPAWN_RATE
    duration: int | None = None
    wait_min: float = 1.0
    wait_max: float = 10.0
    csv_prefix: str | None = None
    quiet: bool = False
    json_logs: bool = False  # JSON log lines and a `load` line every few seconds instead of the table


def parse_url(text: str) -> str:
    """An http(s) URL with a host (and a valid port if given), without a trailing slash."""
    url = text.strip()
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ValueError(f"not a valid URL: {text!r} ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL with a host: {text!r} (use e.g. {DEFAULT_URL})")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError(f"the port in {text!r} is not a number from 1 to 65535")
    if parts.query or parts.fragment:
        raise ValueError(f"the frontend URL takes no query or fragment: {text!r}")
    return url.rstrip("/")


def parse_users(text: str) -> int:
    """A whole number of users, at least 1."""
    try:
        users = int(text)
    except ValueError:
        raise ValueError(f"users must be a whole number, not {text!r}") from None
    if users < 1:
        raise ValueError(f"users must be at least 1, not {users}")
    return users


def parse_spawn_rate(text: str) -> float:
    """Users started per second, above 0."""
    try:
        rate = float(text)
    except ValueError:
        raise ValueError(f"spawn rate must be a number of users per second, not {text!r}") from None
    if not rate > 0 or rate == float("inf"):
        raise ValueError(f"spawn rate must be above 0, not {text!r}")
    return rate


def parse_run_time(text: str) -> int:
    """A run time like 90, 30s, 5m or 1h30m, in whole seconds (at least 1)."""
    compact = text.strip().lower()
    match = _RUN_TIME.match(compact)
    if compact.isdigit():
        seconds = int(compact)
    elif compact and match:
        hours, minutes, secs = (int(group or 0) for group in match.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    else:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90, 30s, 5m, 1h30m)")
    if seconds < 1:
        raise ValueError(f"duration must be at least 1s, not {text!r}")
    return seconds


def parse_wait(text: str) -> tuple[float, float]:
    """A wait range 'MIN-MAX' in seconds (e.g. 1-10, 0-0.5) with 0 <= MIN <= MAX."""
    low, sep, high = text.strip().partition("-")
    try:
        if not sep:
            raise ValueError
        wait_min, wait_max = float(low), float(high)
    except ValueError:
        raise ValueError(f"wait must be MIN-MAX seconds, e.g. 1-10, not {text!r}") from None
    return check_wait(wait_min, wait_max)


def check_wait(wait_min: float, wait_max: float) -> tuple[float, float]:
    """The wait bounds if finite and 0 <= min <= max; ValueError otherwise."""
    if not 0 <= wait_min <= wait_max < float("inf"):
        raise ValueError(f"wait needs 0 <= MIN <= MAX seconds, not {wait_min:g}-{wait_max:g}")
    return wait_min, wait_max


def _argument_type(parse: Callable[[str], T]) -> Callable[[str], T]:
    """Wrap a parser so argparse reports its ValueError message as a usage error (exit code 2)."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `boutique load`."""
    parser.add_argument(
        "--url",
        type=_argument_type(parse_url),
        default=os.environ.get("FRONTEND_URL") or DEFAULT_URL,
        help=f"frontend URL (default: $FRONTEND_URL or {DEFAULT_URL})",
    )
    parser.add_argument(
        "--users",
        type=_argument_type(parse_users),
        default=DEFAULT_USERS,
        help=f"simulated shoppers (default {DEFAULT_USERS})",
    )
    parser.add_argument(
        "--spawn-rate",
        type=_argument_type(parse_spawn_rate),
        default=DEFAULT_SPAWN_RATE,
        help=f"shoppers started per second (default {DEFAULT_SPAWN_RATE:g})",
    )
    parser.add_argument(
        "--duration",
        type=_argument_type(parse_run_time),
        default=None,
        help="how long to run, e.g. 30s, 5m, 1h30m (default: until Ctrl-C)",
    )
    parser.add_argument(
        "--wait",
        type=_argument_type(parse_wait),
        default=DEFAULT_WAIT,
        metavar="MIN-MAX",
        help=f"seconds each shopper waits between tasks (default {DEFAULT_WAIT})",
    )
    parser.add_argument(
        "--csv", metavar="PREFIX", default=None, help="write Locust CSV stats to PREFIX_stats.csv etc."
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no live stats table, only the summary at the end"
    )


def settings_from_args(args: argparse.Namespace) -> LoadSettings:
    """Settings from parsed `boutique load` options (add_arguments has validated them)."""
    wait_min, wait_max = args.wait
    return LoadSettings(
        url=args.url,
        users=args.users,
        spawn_rate=args.spawn_rate,
        duration=args.duration,
        wait_min=wait_min,
        wait_max=wait_max,
        csv_prefix=args.csv or None,
        quiet=bool(args.quiet),
    )


def settings_from_env(environ: Mapping[str, str]) -> LoadSettings:
    """Settings from FRONTEND_URL, LOADGEN_USERS, _SPAWN_RATE, _DURATION, _WAIT_MIN/_MAX and _CSV."""

    def get(name: str) -> str:
        return environ.get(name, "").strip()

    def number(name: str, default: float) -> float:
        text = get(name)
        try:
            return float(text) if text else default
        except ValueError:
            raise ValueError(f"{name} must be a number of seconds, not {text!r}") from None

    def labelled(name: str, parse: Callable[[str], T], text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None

    duration = get("LOADGEN_DURATION")
    try:
        wait = check_wait(number("LOADGEN_WAIT_MIN", 1.0), number("LOADGEN_WAIT_MAX", 10.0))
    except ValueError as exc:
        raise ValueError(f"LOADGEN_WAIT_MIN/LOADGEN_WAIT_MAX: {exc}") from None
    return LoadSettings(
        url=labelled("FRONTEND_URL", parse_url, get("FRONTEND_URL") or DEFAULT_URL),
        users=labelled("LOADGEN_USERS", parse_users, get("LOADGEN_USERS") or str(DEFAULT_USERS)),
        spawn_rate=labelled(
            "LOADGEN_SPAWN_RATE", parse_spawn_rate, get("LOADGEN_SPAWN_RATE") or str(DEFAULT_SPAWN_RATE)
        ),
        duration=labelled("LOADGEN_DURATION", parse_run_time, duration) if duration else None,
        wait_min=wait[0],
        wait_max=wait[1],
        csv_prefix=get("LOADGEN_CSV") or None,
        json_logs=True,  # a service of the shop: its log is JSON lines like every other process's
    )


def locust_command(settings: LoadSettings) -> list[str]:
    """The Locust command line for these settings."""
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        settings.url,
        "--users",
        str(settings.users),
        "--spawn-rate",
        f"{settings.spawn_rate:g}",
    ]
    if settings.duration is not None:
        command += ["--run-time", f"{settings.duration}s"]
    if settings.csv_prefix:
        command += ["--csv", settings.csv_prefix]
    if settings.quiet:
        command.append("--only-summary")
    if settings.json_logs:
        command.append("--skip-log-setup")  # the locustfile sets up the JSON log itself
    return command


def child_environment(settings: LoadSettings, base: Mapping[str, str]) -> dict[str, str]:
    """The child's environment: the caller's, plus the wait range, the log format and who its parent is."""
    return {
        **base,
        "LOADGEN_WAIT_MIN": repr(settings.wait_min),
        "LOADGEN_WAIT_MAX": repr(settings.wait_max),
        LOG_FORMAT_VARIABLE: "json" if settings.json_logs else "text",
        PARENT_PID_VARIABLE: str(os.getpid()),
        "PYTHONUNBUFFERED": "1",
    }


def exit_code(returncode: int, stop_signal: int | None) -> int:
    """The child's exit code; death by the signal we forwarded counts as a clean stop (0)."""
    if returncode >= 0:
        return returncode
    if stop_signal is not None and -returncode == stop_signal:
        return 0
    return 128 - returncode


def launch(settings: LoadSettings) -> int:
    """Run Locust until it ends; forward SIGINT/SIGTERM to it (a second one kills it)."""
    if settings.csv_prefix:
        Path(settings.csv_prefix).parent.mkdir(parents=True, exist_ok=True)
    duration = f"for {settings.duration}s" if settings.duration else "until Ctrl-C"
    if not settings.json_logs:  # the JSON log says it in its own first lines
        print(
            f"boutique load: {settings.users} shoppers at {settings.spawn_rate:g}/s against {settings.url}, "
            f"{duration} (SHED rows: requests an overloaded shop refused with 503 + Retry-After; not failures)",
            file=sys.stderr,
            flush=True,
        )
    # Its own process group: a terminal's Ctrl-C reaches only us, and we pass it on exactly once.
    child = subprocess.Popen(
        locust_command(settings),
        env=child_environment(settings, os.environ),
        stdin=subprocess.DEVNULL,
        process_group=0,
    )
    forwarded: list[int] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        if child.poll() is not None:
            return
        if forwarded:
            child.kill()
            return
        # SIGTERM is Locust's clean-shutdown path for either request (SIGINT could land mid-import).
        forwarded.append(signal.SIGTERM)
        child.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        returncode = _wait(child, forwarded)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return exit_code(returncode, forwarded[0] if forwarded else None)


def _wait(child: subprocess.Popen[bytes], forwarded: list[int]) -> int:
    """Wait for the child; kill it if it is still running STOP_GRACE_SECONDS after a stop request."""
    deadline: float | None = None
    while True:
        try:
            return child.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            if forwarded and deadline is None:
                deadline = time.monotonic() + STOP_GRACE_SECONDS
            elif deadline is not None and time.monotonic() > deadline:
                child.kill()


def run(args: argparse.Namespace) -> int:
    """`boutique load`: run Locust with the parsed options; returns its exit code."""
    return launch(settings_from_args(args))


def run_from_env() -> int:
    """`boutique serve loadgen`: the same, configured from environment variables; 2 on bad settings."""
    try:
        settings = settings_from_env(os.environ)
    except ValueError as exc:
        print(f"boutique serve loadgen: {exc}", file=sys.stderr)
        return 2
    return launch(settings)

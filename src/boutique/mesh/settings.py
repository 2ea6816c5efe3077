"""Every setting of a mesh process, read from the environment once, where the process starts.

`MeshSettings.from_env()` is the one place the mesh reads its variables; each part of the process is
handed the piece it needs: the process's identity, its status endpoints, discovery, tracing and span
export (and the export of log records, metrics and profiles beside them), the concurrency limiter. A bad value stops the start with one line naming the variable, e.g.
"PORT must be an integer port 0..65535, got 'abc'". `boutique serve` reads the settings once and
installs them (`MeshSettings.install`); a part built without settings handed to it takes the installed
ones, or, in a process that installed none (a test, a program using the mesh as a library), reads the
environment as it is at that moment. The OpenTelemetry SDK still reads the standard variables it owns
(OTEL_TRACES_SAMPLER[_ARG], OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME) itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar
from urllib.parse import unquote, urlparse

from boutique.mesh.advertise import host_problem, is_ip, is_wildcard
from boutique.mesh.durations import parse_duration
from boutique.mesh.export_queue import QueueSettings
from boutique.mesh.otlp_send import (
    DEFAULT_GRPC_ENDPOINT,
    DEFAULT_HTTP_ENDPOINT,
    LOGS,
    METRICS,
    PROFILES,
    TRACES,
    OtlpTarget,
    Signal,
)
from boutique.mesh.resilience.limiter import MODES, LimiterSettings

DISCOVERY_BACKENDS = ("registry", "etcd", "dns", "static")
DEFAULT_REGISTRY_URL = "http://127.0.0.1:7600"
DEFAULT_ETCD_ENDPOINTS = ("http://127.0.0.1:2379",)
ADDRESS_SUFFIX = "_ADDR"  # PRODUCT_CATALOG_SERVICE_ADDR, CART_SERVICE_ADDR, ...: pin a dependency
EXPORTERS = ("otlp", "console", "none")
PROTOCOLS = ("grpc", "http/protobuf")
COMPRESSIONS = ("gzip", "none")
DEFAULT_TARGET = OtlpTarget("grpc", DEFAULT_GRPC_ENDPOINT)
DEFAULT_QUEUE = QueueSettings()
DEFAULT_LOGS_TARGET = OtlpTarget("grpc", DEFAULT_GRPC_ENDPOINT, signal=LOGS)
DEFAULT_METRICS_TARGET = OtlpTarget("grpc", DEFAULT_GRPC_ENDPOINT, signal=METRICS)
DEFAULT_PROFILES_TARGET = OtlpTarget("grpc", DEFAULT_GRPC_ENDPOINT, signal=PROFILES)
LOGS_EXPORTERS = ("otlp", "none")
METRICS_EXPORTERS = ("otlp", "prometheus", "none")  # prometheus: /metrics only, nothing pushed
DEFAULT_METRICS_INTERVAL = 10.0
DEFAULT_PROFILING_HZ = 100
MAX_PROFILING_HZ = 1000
DEFAULT_PROFILING_INTERVAL = 10.0
PROFILING_CPU = ("signal", "thread")  # who takes the main thread's cpu samples (boutique.mesh.profiler)
DEFAULT_STOP_TIMEOUT = 4.0  # SIGTERM to exit, with room under the 5 s a platform is asked to wait
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_LIMITER_ALIASES = {"true": "on", "1": "on", "adaptive": "on", "false": "off", "0": "off"}


class SettingsError(ValueError):
    """A variable with a value the mesh cannot use; the message names the variable and the value."""


class _Environment:
    """Typed reads of one environment mapping; unset and empty are the same, a bad value is an error."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def text(self, name: str, default: str = "") -> str:
        """The stripped value, or `default` when unset or empty."""
        return self.environ.get(name, "").strip() or default

    def pick(self, specific: str, generic: str) -> str:
        """The name of the signal-specific variable when it is set, else the generic one's."""
        return specific if self.text(specific) else generic

    def whole(self, name: str, default: int, minimum: int = 0) -> int:
        """A whole number of at least `minimum`."""
        text = self.text(name)
        if not text:
            return default
        what = "a whole number" if minimum <= 0 else f"a whole number of at least {minimum}"
        try:
            value = int(text)
        except ValueError:
            raise SettingsError(f"{name} must be {what}, got {text!r}") from None
        if value < minimum:
            raise SettingsError(f"{name} must be {what}, got {text!r}")
        return value

    def port(self, name: str) -> int | None:
        """A TCP port (0 = any free one); None when unset."""
        text = self.text(name)
        if not text:
            return None
        if not (text.isascii() and text.isdigit()) or int(text) > 65535:
            raise SettingsError(f"{name} must be an integer port 0..65535, got {text!r}")
        return int(text)

    def duration(self, name: str, default: float | None) -> float | None:
        """A duration such as 250ms, 1.5s or 2m (a bare number is seconds)."""
        text = self.text(name)
        if not text:
            return default
        try:
            return parse_duration(text)
        except ValueError:
            raise SettingsError(
                f"{name} must be a duration such as 250ms, 1.5s or 2m, got {text!r}"
            ) from None

    def seconds(self, name: str, default: float) -> float:
        """A duration that is never unset."""
        value = self.duration(name, default)
        return default if value is None else value

    def flag(self, name: str, default: bool) -> bool:
        """A boolean: true/false, 1/0, yes/no or on/off."""
        text = self.text(name).lower()
        if not text:
            return default
        if text not in _TRUE + _FALSE:
            raise SettingsError(f"{name} must be true or false (or 1/0, yes/no, on/off), got {text!r}")
        return text in _TRUE

    def choice(
        self, name: str, choices: tuple[str, ...], default: str, aliases: Mapping[str, str] | None = None
    ) -> str:
        """One of `choices` (case-insensitive; `aliases` map other spellings onto them)."""
        text = self.text(name).lower()
        if not text:
            return default
        value = (aliases or {}).get(text, text)
        if value not in choices:
            raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {text!r}")
        return value


@dataclass(frozen=True)
class ProcessSettings:
    """Who the process is, where it listens and where it is reached, and how long it takes to stop."""

    service: str = ""  # BOUTIQUE_SERVICE, else OTEL_SERVICE_NAME: the caller its dependencies see
    instance_id: str = ""  # BOUTIQUE_INSTANCE_ID; empty: a fresh one is made
    host: str = "127.0.0.1"  # BIND_HOST: where it listens (0.0.0.0 or :: for every interface)
    port: int | None = None  # None: the service's own default
    drain_delay: float | None = None  # BOUTIQUE_DRAIN_DELAY; None: the server's own default
    # BOUTIQUE_ADVERTISE_HOST, else POD_IP: where others reach it; empty: derived from BIND_HOST
    # (see boutique.mesh.advertise, which ProcessInfo applies)
    advertise_host: str = ""
    stop_timeout: float = DEFAULT_STOP_TIMEOUT  # BOUTIQUE_STOP_TIMEOUT: from SIGTERM to exit, at most


@dataclass(frozen=True)
class StatusSettings:
    """The status endpoints on the metrics port (BOUTIQUE_METRICS, METRICS_HOST, METRICS_PORT, token)."""

    enabled: bool = True  # BOUTIQUE_METRICS=off turns them off
    host: str | None = None  # None: the process's BIND_HOST
    port: int = 0  # 0: any free port (registered in discovery)
    token: str | None = None  # BOUTIQUE_STATUS_TOKEN, needed off loopback


@dataclass(frozen=True)
class DiscoverySettings:
    """Where dependencies are found and this process is announced (BOUTIQUE_DISCOVERY and its backend's)."""

    backend: str = "registry"
    registry_url: str = DEFAULT_REGISTRY_URL
    registry_token: str | None = None
    etcd_endpoints: tuple[str, ...] = DEFAULT_ETCD_ENDPOINTS
    dns_suffix: str = ""
    dns_port: int | None = None
    ttl: float = 10.0  # BOUTIQUE_REGISTRY_TTL: the lease of this process's registration
    addresses: tuple[tuple[str, str], ...] = ()  # every set *_ADDR variable, as (name, value)

    def address(self, variable: str) -> str:
        """The value of an address variable such as CART_SERVICE_ADDR ('' when unset)."""
        if not variable.endswith(ADDRESS_SUFFIX):
            raise ValueError(f"address variables end in {ADDRESS_SUFFIX}, got {variable!r}")
        return dict(self.addresses).get(variable, "")


@dataclass(frozen=True)
class TracingSettings:
    """How spans are made and where they go: the OTEL_* variables and the sending queue's BOUTIQUE_EXPORT_*."""

    disabled: bool = False  # OTEL_SDK_DISABLED
    exporter: str = "otlp"  # OTEL_TRACES_EXPORTER
    target: OtlpTarget = DEFAULT_TARGET
    queue: QueueSettings = DEFAULT_QUEUE
    spool_dir: Path | None = None  # BOUTIQUE_EXPORT_SPOOL_DIR
    propagators: str = ""  # OTEL_PROPAGATORS as given (empty: tracecontext,baggage)
    environment: str = "local"  # BOUTIQUE_ENVIRONMENT: deployment.environment
    service_name: str = ""  # OTEL_SERVICE_NAME (the SDK puts it in the resource itself)


@dataclass(frozen=True)
class SignalSettings:
    """Whether log records, metrics and profiles go by OTLP beside spans, where to, and how often.

    All default to on wherever spans go by OTLP (off with OTEL_SDK_DISABLED); OTEL_LOGS_EXPORTER=none,
    OTEL_METRICS_EXPORTER=none (or prometheus) and BOUTIQUE_PROFILING=off switch one off; the targets follow
    the OTEL_EXPORTER_OTLP_* variables, each LOGS_ / METRICS_ / PROFILES_ variant winning over its generic one.
    """

    logs: bool = True  # OTEL_LOGS_EXPORTER
    metrics: bool = True  # OTEL_METRICS_EXPORTER
    logs_target: OtlpTarget = DEFAULT_LOGS_TARGET
    metrics_target: OtlpTarget = DEFAULT_METRICS_TARGET
    # BOUTIQUE_METRICS_EXPORT_INTERVAL (seconds, or a duration), else OTEL_METRIC_EXPORT_INTERVAL (ms)
    metrics_interval: float = DEFAULT_METRICS_INTERVAL
    profiling: bool = True  # BOUTIQUE_PROFILING: the process profiles itself (boutique.mesh.profiler)
    profiles_target: OtlpTarget = DEFAULT_PROFILES_TARGET
    profiling_hz: int = DEFAULT_PROFILING_HZ  # BOUTIQUE_PROFILING_HZ: samples per second, 1..1000
    profiling_interval: float = DEFAULT_PROFILING_INTERVAL  # BOUTIQUE_PROFILING_EXPORT_INTERVAL (seconds)
    # BOUTIQUE_PROFILING_CPU: the main thread's cpu samples by a SIGPROF handler where it can be installed
    # ("signal"), or by the sampling thread as every other thread's ("thread")
    profiling_cpu: str = "signal"


@dataclass(frozen=True)
class FlagSettings:
    """Where feature flags come from: a flag file evaluated in process, a flagd server, or nowhere."""

    source_path: str = ""  # FLAGD_OFFLINE_FLAG_SOURCE_PATH: a flag file in flagd's schema, watched
    host: str = ""  # FLAGD_HOST: a flagd server, when no file is given
    port: int | None = None  # FLAGD_PORT
    resolver: str = "rpc"  # FLAGD_RESOLVER: rpc (ask flagd per evaluation) or in-process (sync from it)
    poll_ms: int = 500  # BOUTIQUE_FLAGS_POLL_MS: how often the file is checked for a change

    @property
    def configured(self) -> bool:
        """True when a flag source is set (without one every flag keeps its coded default)."""
        return bool(self.source_path or self.host)

    def describe(self) -> str:
        """The source, for log lines."""
        return self.source_path or f"flagd at {self.host}:{self.port or 'default port'}"


@dataclass(frozen=True)
class MeshSettings:
    """The settings of one mesh process, in parts; `from_env` reads them all."""

    process: ProcessSettings = field(default_factory=ProcessSettings)
    status: StatusSettings = field(default_factory=StatusSettings)
    discovery: DiscoverySettings = field(default_factory=DiscoverySettings)
    tracing: TracingSettings = field(default_factory=TracingSettings)
    limiter: LimiterSettings = field(default_factory=LimiterSettings)
    flags: FlagSettings = field(default_factory=FlagSettings)
    signals: SignalSettings = field(default_factory=SignalSettings)

    _installed: ClassVar[MeshSettings | None] = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MeshSettings:
        """Read every variable of the mesh from `environ` (default the process environment) once."""
        env = _Environment(os.environ if environ is None else environ)
        tracing = _tracing(env)
        return cls(
            process=_process(env),
            status=_status(env),
            discovery=_discovery(env),
            tracing=tracing,
            limiter=_limiter(env),
            flags=_flags(env),
            signals=_signals(env, tracing),
        )

    @classmethod
    def install(cls, settings: MeshSettings | None) -> None:
        """Make `settings` the process's own, for every part built without settings of its own (None: none)."""
        cls._installed = settings

    @classmethod
    def current(cls) -> MeshSettings:
        """The installed settings, else the environment read now (a process that installed none)."""
        return cls._installed if cls._installed is not None else cls.from_env()

    def for_process(self, service: str, instance_id: str) -> MeshSettings:
        """These settings naming the process: its service and its instance id, fixed for its lifetime."""
        return replace(self, process=replace(self.process, service=service, instance_id=instance_id))


def env_duration(name: str, default: float = 0.0, environ: Mapping[str, str] | None = None) -> float:
    """A duration variable outside the mesh's own (e.g. a service's EXTRA_LATENCY), checked the same way."""
    return _Environment(os.environ if environ is None else environ).seconds(name, default)


def _process(env: _Environment) -> ProcessSettings:
    stop_timeout = env.seconds("BOUTIQUE_STOP_TIMEOUT", DEFAULT_STOP_TIMEOUT)
    if stop_timeout <= 0:
        raise SettingsError(
            f"BOUTIQUE_STOP_TIMEOUT must be more than 0 s, got {env.text('BOUTIQUE_STOP_TIMEOUT')!r}"
        )
    return ProcessSettings(
        service=env.text("BOUTIQUE_SERVICE") or env.text("OTEL_SERVICE_NAME"),
        instance_id=env.text("BOUTIQUE_INSTANCE_ID"),
        host=_bind_host(env),
        port=env.port("PORT"),
        drain_delay=env.duration("BOUTIQUE_DRAIN_DELAY", None),
        advertise_host=_advertise_host(env),
        stop_timeout=stop_timeout,
    )


def _bind_host(env: _Environment) -> str:
    """BIND_HOST: an IP address, a host name, or a wildcard (0.0.0.0, ::) for every interface."""
    text = env.text("BIND_HOST", "127.0.0.1")
    if not is_wildcard(text) and host_problem(text) is not None:
        raise SettingsError(f"BIND_HOST must be an IP address, a host name, 0.0.0.0 or ::, got {text!r}")
    return "::" if text == "[::]" else text.strip("[]") if is_ip(text) else text


def _advertise_host(env: _Environment) -> str:
    """BOUTIQUE_ADVERTISE_HOST (an IP address or a host name), else POD_IP (an IP address), else ''."""
    for name, what in (
        ("BOUTIQUE_ADVERTISE_HOST", "an IP address or a host name"),
        ("POD_IP", "an IP address"),
    ):
        text = env.text(name)
        if not text:
            continue
        problem = host_problem(text)
        if problem is None and name == "POD_IP" and not is_ip(text):
            problem = "not an IP address"
        if problem is not None:
            raise SettingsError(
                f"{name} must be {what} others reach this process at, got {text!r}: {problem}"
            )
        return text.strip("[]")
    return ""


def _status(env: _Environment) -> StatusSettings:
    return StatusSettings(
        enabled=env.flag("BOUTIQUE_METRICS", True),
        host=env.text("METRICS_HOST") or None,
        port=env.port("METRICS_PORT") or 0,
        token=env.text("BOUTIQUE_STATUS_TOKEN") or None,
    )


def _discovery(env: _Environment) -> DiscoverySettings:
    endpoints = env.text("BOUTIQUE_ETCD_ENDPOINTS")
    listed = tuple(part.strip().rstrip("/") for part in endpoints.split(",") if part.strip())
    addresses = sorted(
        (name, value.strip())
        for name, value in env.environ.items()
        if name.endswith(ADDRESS_SUFFIX) and value.strip()
    )
    return DiscoverySettings(
        backend=env.choice("BOUTIQUE_DISCOVERY", DISCOVERY_BACKENDS, "registry"),
        registry_url=env.text("BOUTIQUE_REGISTRY_URL", DEFAULT_REGISTRY_URL),
        registry_token=env.text("BOUTIQUE_REGISTRY_TOKEN") or None,
        etcd_endpoints=listed or DEFAULT_ETCD_ENDPOINTS,
        dns_suffix=env.text("BOUTIQUE_DNS_SUFFIX"),
        dns_port=env.port("BOUTIQUE_DNS_PORT"),
        ttl=env.seconds("BOUTIQUE_REGISTRY_TTL", 10.0),
        addresses=tuple(addresses),
    )


def _limiter(env: _Environment) -> LimiterSettings:
    default = LimiterSettings()
    mode = env.choice("BOUTIQUE_LIMITER", MODES, default.mode, _LIMITER_ALIASES)
    initial = env.whole("BOUTIQUE_LIMITER_INITIAL", default.initial)
    min_limit = env.whole("BOUTIQUE_LIMITER_MIN", default.min_limit)
    max_limit = env.whole("BOUTIQUE_LIMITER_MAX", default.max_limit)
    try:
        return LimiterSettings(mode=mode, initial=initial, min_limit=min_limit, max_limit=max_limit)
    except ValueError as exc:  # bounds that do not fit together; the message names all three variables
        raise SettingsError(str(exc)) from None


def _flags(env: _Environment) -> FlagSettings:
    return FlagSettings(
        source_path=env.text("FLAGD_OFFLINE_FLAG_SOURCE_PATH"),
        host=env.text("FLAGD_HOST"),
        port=env.port("FLAGD_PORT"),
        resolver=env.choice("FLAGD_RESOLVER", ("rpc", "in-process", "file"), "rpc"),
        poll_ms=env.whole("BOUTIQUE_FLAGS_POLL_MS", 500, minimum=50),
    )


def _tracing(env: _Environment) -> TracingSettings:
    spool = env.text("BOUTIQUE_EXPORT_SPOOL_DIR")
    disabled = env.flag("OTEL_SDK_DISABLED", False)
    exporter = "none" if disabled else env.choice("OTEL_TRACES_EXPORTER", EXPORTERS, "otlp")
    otlp = exporter == "otlp"  # the export variables are read (and checked) only when spans go by OTLP
    return TracingSettings(
        disabled=disabled,
        exporter=exporter,
        target=_otlp_target(env) if otlp else DEFAULT_TARGET,
        queue=_queue(env) if otlp else DEFAULT_QUEUE,
        spool_dir=Path(spool) if spool else None,
        propagators=env.text("OTEL_PROPAGATORS"),
        environment=env.text("BOUTIQUE_ENVIRONMENT", "local"),
        service_name=env.text("OTEL_SERVICE_NAME"),
    )


def _signals(env: _Environment, tracing: TracingSettings) -> SignalSettings:
    default = "otlp" if tracing.exporter == "otlp" else "none"
    logs = env.choice("OTEL_LOGS_EXPORTER", LOGS_EXPORTERS, default) == "otlp" and not tracing.disabled
    metrics = (
        env.choice("OTEL_METRICS_EXPORTER", METRICS_EXPORTERS, default) == "otlp" and not tracing.disabled
    )
    standard = (
        env.whole("OTEL_METRIC_EXPORT_INTERVAL", int(DEFAULT_METRICS_INTERVAL * 1000), minimum=1) / 1000
    )
    interval = env.seconds("BOUTIQUE_METRICS_EXPORT_INTERVAL", standard)
    if interval <= 0:
        raise SettingsError(
            "BOUTIQUE_METRICS_EXPORT_INTERVAL must be more than 0 s, "
            f"got {env.text('BOUTIQUE_METRICS_EXPORT_INTERVAL')!r}"
        )
    profiling = env.flag("BOUTIQUE_PROFILING", True) and tracing.exporter == "otlp" and not tracing.disabled
    return SignalSettings(
        logs=logs,
        metrics=metrics,
        logs_target=_otlp_target(env, LOGS) if logs else DEFAULT_LOGS_TARGET,
        metrics_target=_otlp_target(env, METRICS) if metrics else DEFAULT_METRICS_TARGET,
        metrics_interval=interval,
        profiling=profiling,
        profiles_target=_otlp_target(env, PROFILES) if profiling else DEFAULT_PROFILES_TARGET,
        profiling_hz=_profiling_hz(env) if profiling else DEFAULT_PROFILING_HZ,
        profiling_interval=_profiling_interval(env) if profiling else DEFAULT_PROFILING_INTERVAL,
        profiling_cpu=env.choice("BOUTIQUE_PROFILING_CPU", PROFILING_CPU, "signal")
        if profiling
        else "signal",
    )


def _profiling_hz(env: _Environment) -> int:
    """BOUTIQUE_PROFILING_HZ: a whole number of samples per second, 1 to 1000."""
    name = "BOUTIQUE_PROFILING_HZ"
    text = env.text(name)
    if not text:
        return DEFAULT_PROFILING_HZ
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_PROFILING_HZ:
        raise SettingsError(
            f"{name} must be a whole number of samples per second from 1 to {MAX_PROFILING_HZ}, got {text!r}"
        )
    return value


def _profiling_interval(env: _Environment) -> float:
    """BOUTIQUE_PROFILING_EXPORT_INTERVAL: seconds (or a duration) between two profiles sent, more than 0."""
    name = "BOUTIQUE_PROFILING_EXPORT_INTERVAL"
    value = env.seconds(name, DEFAULT_PROFILING_INTERVAL)
    if value <= 0:
        raise SettingsError(f"{name} must be more than 0 s, got {env.text(name)!r}")
    return value


def _queue(env: _Environment) -> QueueSettings:
    default = DEFAULT_QUEUE
    return QueueSettings(
        max_spans=env.whole("BOUTIQUE_EXPORT_QUEUE_SPANS", default.max_spans, minimum=1),
        max_bytes=env.whole("BOUTIQUE_EXPORT_QUEUE_BYTES", default.max_bytes, minimum=1),
        batch_spans=env.whole("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", default.batch_spans, minimum=1),
        schedule_delay=env.whole("OTEL_BSP_SCHEDULE_DELAY", 5000, minimum=1) / 1000,
        retry_max=env.seconds("BOUTIQUE_EXPORT_RETRY_MAX", default.retry_max),
        shutdown_timeout=env.seconds("BOUTIQUE_EXPORT_SHUTDOWN_TIMEOUT", default.shutdown_timeout),
    )


def _otlp_target(env: _Environment, signal: Signal = TRACES) -> OtlpTarget:
    """One signal's target from OTEL_EXPORTER_OTLP_* (each TRACES_, LOGS_, METRICS_ or PROFILES_ variant wins
    over its generic one)."""
    name = signal.name.upper()

    def either(suffix: str) -> str:
        return env.pick(f"OTEL_EXPORTER_OTLP_{name}_{suffix}", f"OTEL_EXPORTER_OTLP_{suffix}")

    protocol = env.choice(either("PROTOCOL"), PROTOCOLS, "grpc")
    specific, generic = (
        env.text(f"OTEL_EXPORTER_OTLP_{name}_ENDPOINT"),
        env.text("OTEL_EXPORTER_OTLP_ENDPOINT"),
    )
    if protocol == "grpc":
        endpoint = specific or generic or DEFAULT_GRPC_ENDPOINT
    elif specific:
        endpoint = specific  # used as given, path included
    else:
        endpoint = (generic or DEFAULT_HTTP_ENDPOINT).rstrip("/") + signal.http_path
    return OtlpTarget(
        protocol=protocol,
        endpoint=endpoint,
        headers=_headers(env.text(either("HEADERS"))),
        timeout=env.seconds(either("TIMEOUT"), 10.0),
        gzip=env.choice(either("COMPRESSION"), COMPRESSIONS, "none") == "gzip",
        insecure=env.flag(either("INSECURE"), urlparse(endpoint).scheme != "https"),
        certificate=env.text(either("CERTIFICATE")) or None,
        client_key=env.text(either("CLIENT_KEY")) or None,
        client_certificate=env.text(either("CLIENT_CERTIFICATE")) or None,
        signal=signal,
    )


def _headers(text: str) -> tuple[tuple[str, str], ...]:
    """`key=value,key2=value2` (values URL-encoded) as header pairs; keys lower-cased for gRPC."""
    pairs = []
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            pairs.append((unquote(key.strip()).lower(), unquote(value.strip())))
    return tuple(pairs)

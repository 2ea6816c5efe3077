"""The mesh's settings: read once from the environment, defaults, one clear line per bad value, handed down."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from boutique.mesh import GrpcServer, Mesh, ProcessInfo
from boutique.mesh.export_queue import QueueSettings
from boutique.mesh.otlp_send import OtlpTarget
from boutique.mesh.presence import Presence
from boutique.mesh.resilience.limiter import LimiterSettings
from boutique.mesh.settings import (
    DiscoverySettings,
    MeshSettings,
    ProcessSettings,
    SettingsError,
    StatusSettings,
    TracingSettings,
    env_duration,
)


@pytest.fixture
def installed() -> Iterator[None]:
    """Whatever a test installs is gone afterwards (other tests read the environment as it is)."""
    try:
        yield
    finally:
        MeshSettings.install(None)


def test_no_variables_give_the_documented_defaults() -> None:
    settings = MeshSettings.from_env({})
    assert settings == MeshSettings()
    assert settings.process == ProcessSettings(service="", instance_id="", host="127.0.0.1", port=None)
    assert settings.status == StatusSettings(enabled=True, host=None, port=0, token=None)
    discovery = settings.discovery
    assert (discovery.backend, discovery.registry_url, discovery.registry_token) == (
        "registry",
        "http://127.0.0.1:7600",
        None,
    )
    assert discovery.etcd_endpoints == ("http://127.0.0.1:2379",) and discovery.ttl == 10.0
    assert discovery.addresses == () and discovery.dns_port is None
    tracing = settings.tracing
    assert (tracing.disabled, tracing.exporter, tracing.environment, tracing.spool_dir) == (
        False,
        "otlp",
        "local",
        None,
    )
    assert tracing.target == OtlpTarget("grpc", "http://localhost:4317", timeout=10.0, insecure=True)
    assert tracing.queue == QueueSettings() and tracing.queue.max_spans == 50_000
    assert settings.limiter == LimiterSettings(mode="on", initial=20, min_limit=1, max_limit=200)


def test_every_variable_lands_in_its_part() -> None:
    settings = MeshSettings.from_env(
        {
            "BOUTIQUE_SERVICE": "cart",
            "BOUTIQUE_INSTANCE_ID": "cart-7",
            "BIND_HOST": "0.0.0.0",
            "PORT": "7070",
            "BOUTIQUE_DRAIN_DELAY": "250ms",
            "BOUTIQUE_METRICS": "off",
            "METRICS_HOST": "127.0.0.2",
            "METRICS_PORT": "9464",
            "BOUTIQUE_STATUS_TOKEN": "status-secret",
            "BOUTIQUE_DISCOVERY": "ETCD",
            "BOUTIQUE_REGISTRY_URL": "http://registry:7600",
            "BOUTIQUE_REGISTRY_TOKEN": "registry-secret",
            "BOUTIQUE_ETCD_ENDPOINTS": "http://e1:2379/, http://e2:2379",
            "BOUTIQUE_DNS_SUFFIX": ".shop.svc",
            "BOUTIQUE_DNS_PORT": "7000",
            "BOUTIQUE_REGISTRY_TTL": "30s",
            "CART_SERVICE_ADDR": " cart:7070 ",
            "EMPTY_SERVICE_ADDR": "",
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4318/",
            "OTEL_EXPORTER_OTLP_HEADERS": "X-Tenant=shop,api-key=a%20b",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "2.5",
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "gzip",
            "OTEL_EXPORTER_OTLP_CERTIFICATE": "/etc/ca.pem",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "64",
            "OTEL_PROPAGATORS": "b3multi",
            "OTEL_SERVICE_NAME": "cart-svc",
            "BOUTIQUE_ENVIRONMENT": "staging",
            "BOUTIQUE_EXPORT_SPOOL_DIR": "/tmp/spool",
            "BOUTIQUE_EXPORT_QUEUE_SPANS": "100",
            "BOUTIQUE_EXPORT_QUEUE_BYTES": "4096",
            "BOUTIQUE_EXPORT_RETRY_MAX": "2s",
            "BOUTIQUE_EXPORT_SHUTDOWN_TIMEOUT": "1s",
            "BOUTIQUE_LIMITER": "fixed",
            "BOUTIQUE_LIMITER_INITIAL": "7",
            "BOUTIQUE_LIMITER_MIN": "2",
            "BOUTIQUE_LIMITER_MAX": "9",
        }
    )
    assert settings.process == ProcessSettings("cart", "cart-7", "0.0.0.0", 7070, 0.25)
    assert settings.status == StatusSettings(False, "127.0.0.2", 9464, "status-secret")
    assert settings.discovery == DiscoverySettings(
        backend="etcd",
        registry_url="http://registry:7600",
        registry_token="registry-secret",
        etcd_endpoints=("http://e1:2379", "http://e2:2379"),
        dns_suffix=".shop.svc",
        dns_port=7000,
        ttl=30.0,
        addresses=(("CART_SERVICE_ADDR", "cart:7070"),),
    )
    assert settings.discovery.address("CART_SERVICE_ADDR") == "cart:7070"
    assert settings.discovery.address("EMPTY_SERVICE_ADDR") == ""
    assert settings.tracing == TracingSettings(
        disabled=False,
        exporter="otlp",
        target=OtlpTarget(
            "http/protobuf",
            "https://collector:4318/v1/traces",
            headers=(("x-tenant", "shop"), ("api-key", "a b")),
            timeout=2.5,
            gzip=True,
            insecure=False,
            certificate="/etc/ca.pem",
        ),
        queue=settings.tracing.queue,  # below
        spool_dir=Path("/tmp/spool"),
        propagators="b3multi",
        environment="staging",
        service_name="cart-svc",
    )
    queue = settings.tracing.queue
    assert (queue.max_spans, queue.max_bytes, queue.batch_spans, queue.schedule_delay) == (100, 4096, 64, 0.2)
    assert (queue.retry_initial, queue.retry_max, queue.shutdown_timeout) == (0.5, 2.0, 1.0)
    assert settings.limiter == LimiterSettings("fixed", initial=7, min_limit=2, max_limit=9)


PORT = "must be an integer port 0..65535"
DURATION = "must be a duration such as 250ms, 1.5s or 2m"
FLAG = "must be true or false (or 1/0, yes/no, on/off)"
COUNT = "must be a whole number of at least 1"
BAD_VALUES = [
    ("PORT", "abc", PORT),
    ("PORT", "65536", PORT),
    ("METRICS_PORT", "-1", PORT),
    ("BOUTIQUE_DNS_PORT", "http", PORT),
    ("BOUTIQUE_DRAIN_DELAY", "soon", DURATION),
    ("BOUTIQUE_REGISTRY_TTL", "10 days", DURATION),
    ("BOUTIQUE_EXPORT_RETRY_MAX", "-2s", DURATION),
    ("BOUTIQUE_EXPORT_SHUTDOWN_TIMEOUT", "forever", DURATION),
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "ten", DURATION),
    ("BOUTIQUE_METRICS", "maybe", FLAG),
    ("OTEL_SDK_DISABLED", "perhaps", FLAG),
    ("OTEL_EXPORTER_OTLP_INSECURE", "sure", FLAG),
    ("BOUTIQUE_DISCOVERY", "zookeeper", "must be one of registry, etcd, dns, static"),
    ("OTEL_TRACES_EXPORTER", "jaeger", "must be one of otlp, console, none"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "must be one of grpc, http/protobuf"),
    ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "udp", "must be one of grpc, http/protobuf"),
    ("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli", "must be one of gzip, none"),
    ("BOUTIQUE_LIMITER", "maybe", "must be one of on, fixed, off"),
    ("BOUTIQUE_LIMITER_MAX", "lots", "must be a whole number"),
    ("BOUTIQUE_EXPORT_QUEUE_SPANS", "0", COUNT),
    ("BOUTIQUE_EXPORT_QUEUE_BYTES", "64MiB", COUNT),
    ("OTEL_BSP_SCHEDULE_DELAY", "-5", COUNT),
    ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "1.5", COUNT),
]


@pytest.mark.parametrize(("variable", "value", "rule"), BAD_VALUES, ids=[row[0] for row in BAD_VALUES])
def test_a_bad_value_is_one_line_naming_the_variable(variable: str, value: str, rule: str) -> None:
    with pytest.raises(SettingsError) as raised:
        MeshSettings.from_env({variable: value})
    assert str(raised.value) == f"{variable} {rule}, got {value!r}"
    assert "\n" not in str(raised.value)


def test_limits_that_do_not_fit_together_name_all_three_variables() -> None:
    with pytest.raises(SettingsError, match="BOUTIQUE_LIMITER_MIN <= BOUTIQUE_LIMITER_INITIAL"):
        MeshSettings.from_env({"BOUTIQUE_LIMITER_MIN": "50", "BOUTIQUE_LIMITER_INITIAL": "20"})


def test_spellings_that_mean_the_same_are_accepted() -> None:
    for text in ("true", "TRUE", "1", "yes", "on"):
        assert MeshSettings.from_env({"OTEL_SDK_DISABLED": text}).tracing.disabled
    for text in ("false", "0", "no", "off", "OFF", ""):
        assert not MeshSettings.from_env({"OTEL_SDK_DISABLED": text}).tracing.disabled
    assert MeshSettings.from_env({"BOUTIQUE_LIMITER": "adaptive"}).limiter.mode == "on"
    assert MeshSettings.from_env({"BOUTIQUE_LIMITER": "false"}).limiter.mode == "off"
    assert MeshSettings.from_env({"PORT": "0", "METRICS_PORT": " 9464 "}).status.port == 9464
    assert MeshSettings.from_env({"BOUTIQUE_DRAIN_DELAY": "2"}).process.drain_delay == 2.0


def test_export_variables_are_read_only_when_spans_go_by_otlp() -> None:
    bad_export = {"OTEL_EXPORTER_OTLP_COMPRESSION": "brotli", "BOUTIQUE_EXPORT_QUEUE_SPANS": "many"}
    for quiet in ({"OTEL_TRACES_EXPORTER": "none"}, {"OTEL_TRACES_EXPORTER": "console"}):
        assert MeshSettings.from_env({**bad_export, **quiet}).tracing.target.protocol == "grpc"
    disabled = MeshSettings.from_env({**bad_export, "OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "x"})
    assert disabled.tracing.disabled
    with pytest.raises(SettingsError):
        MeshSettings.from_env(bad_export)


def test_the_traces_variant_wins_and_is_the_one_named() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://generic:4317",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:4318/custom",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "1",
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "3",
    }
    target = MeshSettings.from_env(env).tracing.target
    assert (target.protocol, target.endpoint, target.timeout) == (
        "http/protobuf",
        "http://traces:4318/custom",
        3.0,
    )
    with pytest.raises(SettingsError, match=r"^OTEL_EXPORTER_OTLP_TRACES_TIMEOUT must be"):
        MeshSettings.from_env({**env, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "soon"})


def test_address_variables_end_in_addr() -> None:
    with pytest.raises(ValueError, match="_ADDR"):
        DiscoverySettings().address("CART_TARGET")


def test_installed_settings_are_the_process_settings(
    installed: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PORT", "7001")
    assert MeshSettings.current().process.port == 7001  # none installed: the environment now
    monkeypatch.setenv("PORT", "7002")
    assert MeshSettings.current().process.port == 7002
    started = MeshSettings.from_env({"PORT": "7003"}).for_process("cart", "cart-0")
    MeshSettings.install(started)
    monkeypatch.setenv("PORT", "abc")  # read once: a later change is not seen
    assert MeshSettings.current() is started
    info = ProcessInfo.from_env("cart")
    assert (info.service, info.instance_id, info.port) == ("cart", "cart-0", 7003)
    assert Mesh("x").settings is started
    assert Mesh("x", MeshSettings()).settings == MeshSettings()


def test_process_info_takes_the_service_default_port_and_makes_an_id() -> None:
    info = ProcessInfo.from_settings("frontend", ProcessSettings(), default_port=8080)
    assert info.port == 8080 and info.host == "127.0.0.1"
    assert info.instance_id.startswith("frontend-") and str(os.getpid()) in info.instance_id
    assert ProcessInfo.from_settings("frontend", ProcessSettings(port=0), 8080).port == 0


def test_servers_take_the_settings_handed_to_them(installed: None) -> None:
    MeshSettings.install(MeshSettings.from_env({"BOUTIQUE_LIMITER": "off", "BOUTIQUE_DRAIN_DELAY": "9s"}))
    handed = MeshSettings.from_env({"BOUTIQUE_LIMITER": "fixed", "BOUTIQUE_DRAIN_DELAY": "1s"})
    info = ProcessInfo("svc", "svc-0")
    server = GrpcServer(info, [], settings=handed)
    assert server.limiter is not None and server.limiter.current_limit == 20 and server.drain_delay == 1.0
    process_wide = GrpcServer(info, [])
    assert process_wide.limiter is None and process_wide.drain_delay == 9.0
    assert GrpcServer(info, [], drain_delay=0.0, settings=handed).drain_delay == 0.0
    presence = Presence(info, Mesh("svc", handed))
    assert presence.settings is handed


def test_env_duration_reads_a_service_variable_with_the_same_checks() -> None:
    assert env_duration("EXTRA_LATENCY", 0.0, {"EXTRA_LATENCY": "400ms"}) == pytest.approx(0.4)
    assert env_duration("EXTRA_LATENCY", 1.5, {}) == 1.5
    with pytest.raises(SettingsError, match=r"^EXTRA_LATENCY must be a duration"):
        env_duration("EXTRA_LATENCY", 0.0, {"EXTRA_LATENCY": "slow"})


def serve(service: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`boutique serve <service>` with these variables; returns once it exits."""
    return subprocess.run(
        [sys.executable, "-m", "boutique.cli", "serve", service],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "OTEL_TRACES_EXPORTER": "none", **env},
    )


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PORT", "abc", "PORT must be an integer port 0..65535, got 'abc'"),
        ("METRICS_PORT", "-1", "METRICS_PORT must be an integer port 0..65535, got '-1'"),
        ("BOUTIQUE_DRAIN_DELAY", "soon", f"BOUTIQUE_DRAIN_DELAY {DURATION}, got 'soon'"),
    ],
)
def test_a_service_with_a_bad_value_exits_2_with_one_line(variable: str, value: str, message: str) -> None:
    done = serve("currency", **{variable: value})
    print(done.stderr)
    assert done.returncode == 2
    assert done.stderr == f"boutique serve currency: {message}\n"

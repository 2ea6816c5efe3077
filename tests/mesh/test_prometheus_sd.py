"""Prometheus file_sd from the registry: the targets and config texts, the watcher, and the command."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from boutique.mesh.instance import CRITICAL, Instance
from boutique.mesh.prometheus_sd import (
    TargetsFile,
    prometheus_duration,
    render_targets,
    scrape_config,
    targets,
    watch,
    write_once,
)
from boutique.mesh.registry import RegistryClient, RegistryError, RegistryServer
from tests.support import wait_until


def make_instance(service: str, instance_id: str, metrics: int | None, host: str = "127.0.0.1") -> Instance:
    ports = {"grpc": 50051} if metrics is None else {"grpc": 50051, "metrics": metrics}
    return Instance(service, instance_id, host, ports, {"pid": "1", "started_at": "now", "version": "1"})


def listed(path: Path) -> list[tuple[str, str, str]]:
    """(service, instance, target) of every group in a targets file; [] when there is no file yet."""
    if not path.exists():
        return []
    return [
        (group["labels"]["service"], group["labels"]["instance"], target)
        for group in json.loads(path.read_text())
        for target in group["targets"]
    ]


# ---- the texts ------------------------------------------------------------------------------------


def test_one_group_per_instance_with_a_metrics_port_sorted_and_labelled() -> None:
    services = {
        "frontend": [make_instance("frontend", "frontend-0", 9200)],
        "cart": [
            make_instance("cart", "cart-1", 9102, host="::1"),
            make_instance("cart", "cart-0", 9101),
            make_instance("cart", "cart-2", None),  # no metrics port: nothing to scrape
        ],
        "ad": [],
    }
    assert targets(services) == [
        {"targets": ["127.0.0.1:9101"], "labels": {"service": "cart", "instance": "cart-0"}},
        {"targets": ["[::1]:9102"], "labels": {"service": "cart", "instance": "cart-1"}},
        {"targets": ["127.0.0.1:9200"], "labels": {"service": "frontend", "instance": "frontend-0"}},
    ]
    shuffled = {
        "cart": list(reversed(services["cart"])),
        "frontend": services["frontend"],
        "ad": [],
    }
    assert render_targets(targets(shuffled)) == render_targets(targets(services))
    assert targets({}) == [] and render_targets([]) == "[]\n"


def test_an_unhealthy_instance_is_still_a_target() -> None:
    sick = Instance("cart", "cart-0", "127.0.0.1", {"metrics": 9101}, status=CRITICAL)
    assert targets({"cart": [sick]})[0]["targets"] == ["127.0.0.1:9101"]


def test_scrape_config_text(tmp_path: Path) -> None:
    text = scrape_config(tmp_path / "targets.json", "15s", refresh_interval="2s")
    assert text == (
        "# Written by `boutique prometheus-config`; targets come from the service registry.\n"
        "global:\n"
        "  scrape_interval: 15s\n"
        "  evaluation_interval: 15s\n"
        "scrape_configs:\n"
        '  - job_name: "boutique"\n'
        "    metrics_path: /metrics\n"
        "    scheme: http\n"
        "    file_sd_configs:\n"
        "      - files:\n"
        f'          - "{tmp_path}/targets.json"\n'
        "        refresh_interval: 2s\n"
    )
    with_token = scrape_config(tmp_path / "t.json", "1m30s", job="shop", credentials_file=tmp_path / "tok")
    assert f'    authorization:\n      type: Bearer\n      credentials_file: "{tmp_path}/tok"\n' in with_token
    assert '  - job_name: "shop"\n' in with_token and "refresh_interval: 30s\n" in with_token


@pytest.mark.parametrize("interval", ["", "0s", "15", "1.5s", "15 s", "s", "10s5m"])
def test_scrape_config_refuses_what_prometheus_would(tmp_path: Path, interval: str) -> None:
    with pytest.raises(ValueError, match="Prometheus duration"):
        scrape_config(tmp_path / "targets.json", interval)


def test_prometheus_duration() -> None:
    assert [prometheus_duration(s) for s in (2.0, 0.5, 1.25, 0.0, 120)] == [
        "2s",
        "500ms",
        "1250ms",
        "1ms",
        "120s",
    ]


def test_promtool_accepts_the_config_and_the_targets(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("install prometheus (apt-get install prometheus) for promtool")
    awkward = tmp_path / "dir with: spaces # and 'quotes'"
    awkward.mkdir()
    targets_file = awkward / "targets.json"
    token = awkward / "token"
    token.write_text("secret")
    TargetsFile(targets_file).update({"cart": [make_instance("cart", "cart-0", 9101, host="::1")]})
    config = awkward / "prometheus.yml"
    config.write_text(scrape_config(targets_file, "1s", refresh_interval="500ms", credentials_file=token))
    checked = subprocess.run(
        [promtool, "check", "config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "does not exist" not in checked.stdout + checked.stderr, "promtool read another path"
    checked = subprocess.run(
        [promtool, "check", "service-discovery", "--timeout=3s", str(config), "boutique"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "[::1]:9101" in checked.stdout and "cart-0" in checked.stdout, checked.stdout


# ---- the targets file ------------------------------------------------------------------------------


def test_the_file_is_rewritten_only_when_the_targets_change(tmp_path: Path) -> None:
    path = tmp_path / "sd" / "targets.json"
    services = {"cart": [make_instance("cart", "cart-0", 9101)]}
    change = TargetsFile(path).update(services)
    assert change is not None and change.added == ("cart-0@127.0.0.1:9101",) and change.removed == ()
    inode = path.stat().st_ino
    assert TargetsFile(path).update(services) is None, "a fresh watcher reads what is already there"
    assert path.stat().st_ino == inode, "an unchanged registry must not rewrite the file"
    moved = TargetsFile(path).update({"cart": [make_instance("cart", "cart-0", 9109)]})
    assert moved is not None
    assert (moved.added, moved.removed, moved.total) == (
        ("cart-0@127.0.0.1:9109",),
        ("cart-0@127.0.0.1:9101",),
        1,
    )
    assert path.stat().st_ino != inode, "the file is replaced, not written in place"
    assert [p.name for p in path.parent.iterdir()] == ["targets.json"], "no temporary file is left"
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


# ---- the watcher on a real registry ---------------------------------------------------------------


async def test_watch_follows_registrations_and_deregistrations(
    registry: RegistryServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="boutique.mesh.prometheus_sd")
    path = tmp_path / "targets.json"
    async with RegistryClient(registry.url) as client:
        await client.register(make_instance("cart", "cart-0", 9101), ttl=30)
        watcher = asyncio.create_task(watch(registry.url, None, path, refresh=0.05))
        try:
            await wait_until(lambda: listed(path) == [("cart", "cart-0", "127.0.0.1:9101")])
            await client.register(make_instance("frontend", "frontend-0", 9200), ttl=30)
            await client.register(make_instance("checkout", "checkout-0", None), ttl=30)
            await wait_until(lambda: len(listed(path)) == 2)
            assert listed(path) == [
                ("cart", "cart-0", "127.0.0.1:9101"),
                ("frontend", "frontend-0", "127.0.0.1:9200"),
            ], "checkout has no metrics port"
            await client.deregister("cart", "cart-0")
            await wait_until(lambda: listed(path) == [("frontend", "frontend-0", "127.0.0.1:9200")])
            await client.deregister("frontend", "frontend-0")
            await wait_until(lambda: listed(path) == [] and path.read_text() == "[]\n")
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    changes = [
        (r.added, r.removed, r.targets)  # type: ignore[attr-defined]
        for r in caplog.records
        if r.getMessage() == "prometheus targets changed"
    ]
    assert changes == [(1, 0, 1), (1, 0, 2), (0, 1, 1), (0, 1, 0)]


async def test_the_last_targets_survive_a_registry_outage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="boutique.mesh.prometheus_sd")
    path = tmp_path / "targets.json"
    first = RegistryServer(port=0)
    port = await first.start()
    second: RegistryServer | None = None
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch(first.url, None, path, refresh=0.05, stop=stop))
    try:
        async with RegistryClient(first.url) as client:
            await client.register(make_instance("cart", "cart-0", 9101), ttl=30)
        await wait_until(lambda: listed(path) == [("cart", "cart-0", "127.0.0.1:9101")])
        before = path.read_text()
        await first.stop()

        def warned() -> int:
            return sum(r.getMessage().startswith("cannot read the registry") for r in caplog.records)

        await wait_until(lambda: warned() == 1)
        await asyncio.sleep(0.5)  # about ten more polls against the dead registry
        assert warned() == 1, "one warning per outage, not one per poll"
        assert path.read_text() == before, "an outage must not change the targets"

        second = RegistryServer(port=port)  # back, empty, and then a new instance registers
        await second.start()
        async with RegistryClient(second.url) as client:
            await client.register(make_instance("cart", "cart-1", 9102), ttl=30)
        await wait_until(lambda: ("cart", "cart-1", "127.0.0.1:9102") in listed(path))
        assert any(r.getMessage() == "registry reachable again" for r in caplog.records)
        stop.set()
        await asyncio.wait_for(watcher, 10)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await first.stop()
        if second is not None:
            await second.stop()


async def test_write_once_raises_when_the_registry_is_down_and_writes_nothing(tmp_path: Path) -> None:
    probe = RegistryServer(port=0)
    port = await probe.start()
    await probe.stop()
    with pytest.raises(RegistryError, match="unreachable"):
        await write_once(f"http://127.0.0.1:{port}", None, tmp_path / "targets.json")
    assert not (tmp_path / "targets.json").exists()


# ---- the command ----------------------------------------------------------------------------------


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "boutique.cli", "prometheus-config", *args]


async def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *_command(*args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_once_writes_both_files(registry: RegistryServer, tmp_path: Path) -> None:
    async with RegistryClient(registry.url) as client:
        await client.register(make_instance("cart", "cart-0", 9101), ttl=30)
    out = tmp_path / "prom"
    code, stdout, stderr = await _run(
        "--once", "--out", str(out), "--registry", registry.url, "--scrape-interval", "1s",
        env={"BOUTIQUE_STATUS_TOKEN": "s3cret"},
    )  # fmt: skip
    assert code == 0, stderr
    assert listed(out / "targets.json") == [("cart", "cart-0", "127.0.0.1:9101")]
    config = (out / "prometheus.yml").read_text()
    assert "scrape_interval: 1s" in config and f'"{out}/targets.json"' in config
    assert "s3cret" not in config and (out / "status-token").read_text() == "s3cret"
    assert (out / "status-token").stat().st_mode & 0o077 == 0, "the token file is private"
    assert f"prometheus --config.file={out}/prometheus.yml" in stdout


async def test_once_fails_with_one_line_when_the_registry_is_down(tmp_path: Path) -> None:
    probe = RegistryServer(port=0)
    port = await probe.start()
    await probe.stop()
    out = tmp_path / "prom"
    code, _, stderr = await _run("--once", "--out", str(out), "--registry", f"http://127.0.0.1:{port}")
    assert code != 0
    assert stderr.strip().count("\n") == 0 and "unreachable" in stderr, stderr
    assert not out.exists() or not any(out.iterdir()), "nothing is written when the registry is down"


async def test_the_command_keeps_the_targets_current_until_sigterm(
    registry: RegistryServer, tmp_path: Path
) -> None:
    out = tmp_path / "prom"
    client = RegistryClient(registry.url)
    await client.register(make_instance("cart", "cart-0", 9101), ttl=30)
    process = await asyncio.create_subprocess_exec(
        *_command("--out", str(out), "--registry", registry.url, "--refresh", "100ms"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "BOUTIQUE_LOG_STREAM": "stderr"},  # its logs, even where it runs in a container
    )
    try:
        await wait_until(lambda: listed(out / "targets.json") == [("cart", "cart-0", "127.0.0.1:9101")])
        assert "refresh_interval: 100ms" in (out / "prometheus.yml").read_text()
        await client.register(make_instance("cart", "cart-1", 9102), ttl=30)
        await wait_until(lambda: len(listed(out / "targets.json")) == 2)
        await client.deregister("cart", "cart-0")
        await wait_until(lambda: listed(out / "targets.json") == [("cart", "cart-1", "127.0.0.1:9102")])
        process.send_signal(signal.SIGTERM)
        stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, stderr.decode()
        assert f"--config.file={out}/prometheus.yml" in stdout.decode()
        events = [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
        changes = [e for e in events if e["event"] == "prometheus targets changed"]
        assert [(e["added"], e["removed"], e["targets"]) for e in changes] == [
            (1, 0, 1),
            (1, 0, 2),
            (0, 1, 1),
        ]
        assert all(e["service"] == "prometheus-config" for e in events)
    finally:
        await client.close()
        if process.returncode is None:
            process.kill()
            await process.wait()

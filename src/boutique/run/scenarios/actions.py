"""Process faults a scenario makes while its shoppers shop: kill a replica, or stop a service for a while.

Both go through `boutique.run.chaos` (what `boutique chaos` runs), so they are logged in
`<data-dir>/chaos.jsonl` and a stopped process always runs again, even if the scenario dies.
"""

from __future__ import annotations

import asyncio

from boutique.run import chaos
from boutique.run.scenarios.evidence import now_us
from boutique.run.scenarios.model import Action, Stage, Undo


def kill_replica(service: str, at: float = 0.3) -> Action:
    """SIGKILL the first instance of `service`; `up` restarts it. Notes what was killed for the checks."""

    async def run(stage: Stage) -> Undo | None:
        instances = stage.target.refreshed().instances(service)
        if len(instances) < 2:
            stage.say(
                f"note: {service} runs one instance, so what needs it fails until the supervisor has "
                f"restarted it; start `boutique up --replicas {service}=2` to see another replica take over"
            )
        at_us = now_us()
        victim = await asyncio.to_thread(chaos.kill, stage.target.data_dir, service, stage.by)
        before = next((p for p in instances if p.instance == victim.instance), None)
        stage.evidence.notes["killed"] = {
            "instance": victim.instance,
            "pid": victim.pid,
            "restarts": before.restarts if before else 0,
            "at_us": at_us,
            "replicas": len(instances),
        }
        stage.say(f"killed {victim.instance} (pid {victim.pid}, SIGKILL)")
        loop = asyncio.get_running_loop()
        began = loop.time()

        async def watch() -> None:
            again = await chaos.serving_again(stage.target.data_dir, victim, timeout=60.0, by=stage.by)
            if again is not None:
                took = loop.time() - began
                stage.evidence.notes["back_after"] = took
                stage.say(
                    f"{victim.instance} is serving again as pid {again.pid}, {took:.1f}s after the kill"
                )

        stage.evidence.tasks.append(asyncio.create_task(watch(), name=f"watch {victim.instance}"))
        return None

    return Action(f"kill -9 one {service} instance (as `boutique chaos kill {service}`)", at, run)


def stop_service(service: str, at: float = 0.0) -> Action:
    """SIGSTOP every instance of `service` until the faults are lifted (a partition: no answer at all)."""

    async def run(stage: Stage) -> Undo | None:
        seconds = max(1.0, stage.duration * (1 - at)) + 1.0  # the runner lifts it; the deadline is a backstop
        faults: list[chaos.Fault] = []
        for process in stage.target.refreshed().instances(service):
            fault = await asyncio.to_thread(
                chaos.stop, stage.target.data_dir, process.instance, seconds, stage.by
            )
            faults.append(fault)
            stage.say(f"stopped {process.instance} (pid {fault.target.pid}, SIGSTOP)")

        def undo() -> None:
            for fault in faults:
                fault.end()
                stage.say(f"resumed {fault.target.instance} (SIGCONT) after {fault.elapsed:.1f}s")

        return undo

    return Action(f"SIGSTOP every {service} instance (as `boutique chaos stop {service}`)", at, run)

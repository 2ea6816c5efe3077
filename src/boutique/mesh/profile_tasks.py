"""Where each asyncio task is, read from another thread: its coroutine chain, outermost first.

A task waiting on a lock, a sleep or a socket is on no thread's stack, so neither the cpu nor the wall
profile sees it. Its coroutine says where it is: `get_coro()`, then what each coroutine awaits
(`cr_await`, or `gi_yieldfrom` for a generator) down to the innermost awaitable (a future has no frame:
the chain ends at the coroutine awaiting it), each coroutine's frame at the line it is suspended on.
Coroutines without a Python frame are passed through, not shown; Cython's (gRPC's server) show the frame
Cython makes for them, and the wrapper through which one awaits ours is seen through. The task
running at that moment is suspended nowhere: its frames are the loop thread's, from its outermost
coroutine's frame down.

Everything here is read without the loop's cooperation, holding only the interpreter lock: the task set
may change meanwhile (`asyncio.all_tasks` retries), a task may end (its coroutine then has no frame);
nothing raises out of here.
"""

from __future__ import annotations

import asyncio
import gc
from types import CoroutineType, FrameType, GeneratorType
from typing import Any

MAX_DEPTH = 256  # awaits followed at most (a chain is short; this bounds a cycle no coroutine makes)
WRAPPER = "coroutine_wrapper"  # what `coroutine.__await__()` gives, in CPython and in Cython


def wrapped(wrapper: object) -> object | None:
    """The coroutine a `coroutine_wrapper` drives (a Cython coroutine awaiting ours holds one): it names no
    attribute for it, but it is the one object the wrapper refers to."""
    referents = gc.get_referents(wrapper)
    return referents[0] if len(referents) == 1 else None


def loop_tasks(loop: asyncio.AbstractEventLoop) -> list[asyncio.Task[Any]]:
    """The loop's unfinished tasks; none when the loop is closed or the set kept changing."""
    try:
        if loop.is_closed():
            return []
        return list(asyncio.all_tasks(loop))
    except Exception:  # RuntimeError after a thousand concurrent changes; anything odd a loop may do
        return []


def coroutine_frames(task: asyncio.Task[Any]) -> list[FrameType]:
    """The frames of a suspended task's coroutines, outermost first (empty once it ended)."""
    found: list[FrameType] = []
    try:
        awaited: Any = task.get_coro()
        for _ in range(MAX_DEPTH):
            kind = type(awaited)
            if kind is CoroutineType:  # the common case first, without a failed attribute lookup
                frame, awaited = awaited.cr_frame, awaited.cr_await
            elif kind is GeneratorType:
                frame, awaited = awaited.gi_frame, awaited.gi_yieldfrom
            elif awaited is None or isinstance(awaited, asyncio.Future):  # the innermost: no frame
                break
            else:  # another implementation's coroutine (Cython's): its frame if any, what it awaits
                frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
                inner = getattr(awaited, "cr_await", None)
                if inner is None:
                    inner = getattr(awaited, "gi_yieldfrom", None)
                if inner is None and kind.__name__ == WRAPPER:
                    inner = wrapped(awaited)
                awaited = inner
            if frame is not None and type(frame) is FrameType:
                found.append(frame)
    except Exception:  # an awaitable of an odd kind: what was read so far stands
        pass
    return found


def running_frames(task: asyncio.Task[Any], top: FrameType | None) -> list[FrameType]:
    """The frames of the task running on its loop's thread (whose top frame is `top`), outermost first:
    the thread's stack from the task's own coroutine down; its coroutine chain if that is not found."""
    try:
        outer = getattr(task.get_coro(), "cr_frame", None)
        if outer is not None:
            found: list[FrameType] = []
            frame = top
            while frame is not None:
                found.append(frame)
                if frame is outer:
                    found.reverse()
                    return found
                frame = frame.f_back
    except Exception:
        pass
    return coroutine_frames(task)

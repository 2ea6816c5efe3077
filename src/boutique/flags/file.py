"""The flag file in flagd's JSON schema: checked, changed atomically, and its changes kept as history.

Every process reads the file through OpenFeature's flagd provider; this module is what writes it
(`boutique flags`, the observatory's Flags page, `boutique up` seeding it) and what checks it, so a
file with a mistake never replaces the last good one.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import getpass
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("boutique.flags")

DEFAULT_FILE = Path(__file__).with_name("default.flagd.json")
SCHEMA = "https://flagd.dev/schema/v0/flags.json"
# Flag metadata (flagd allows plain values there) that says what a targeted setting means, for people.
DESCRIPTION_KEY = "description"
RULE_KEY = "boutiqueRule"
VARIANT_KEY = "boutiqueVariant"


# What flagd's schema allows in a flag (the in-process evaluator refuses anything else).
FIELDS = ("state", "variants", "defaultVariant", "targeting", "metadata", "source", "selector")


class FlagFileError(ValueError):
    """The flag file, or a change asked of it, is not valid; the message says why."""


@dataclass(frozen=True)
class Change:
    """One change of one flag: when, to what, from what, and by whom."""

    time: float
    flag: str
    variant: str
    previous: str
    by: str
    rule: str = ""


@dataclass(frozen=True)
class FlagView:
    """One flag as people see it: what it does, its variants, what it is set to and its last change."""

    name: str
    description: str
    variants: dict[str, Any]
    variant: str
    default_variant: str
    rule: str
    enabled: bool
    last_change: Change | None

    @property
    def is_default(self) -> bool:
        """True when it is as shipped (every fault off)."""
        return self.variant == self.default_variant and not self.rule and self.enabled

    def as_json(self) -> dict[str, Any]:
        """The flag as the JSON API answers it."""
        return {
            "name": self.name,
            "description": self.description,
            "variants": self.variants,
            "variant": self.variant,
            "defaultVariant": self.default_variant,
            "rule": self.rule,
            "enabled": self.enabled,
            "isDefault": self.is_default,
            "lastChange": asdict(self.last_change) if self.last_change else None,
        }


def shipped() -> dict[str, Any]:
    """The shipped flag document: every flag, every fault off."""
    return json.loads(DEFAULT_FILE.read_text())


def check_document(document: Any) -> list[str]:
    """What is wrong with a flag document (empty when flagd and the shop can use it as it is)."""
    if not isinstance(document, dict):
        return ["the file must hold a JSON object"]
    flags = document.get("flags")
    if not isinstance(flags, dict):
        return ["'flags' must be an object of flag name -> flag"]
    problems: list[str] = []
    for name, flag in flags.items():
        problems += [f"{name}: {problem}" for problem in _check_flag(flag)]
    return problems


def _check_flag(flag: Any) -> list[str]:
    if not isinstance(flag, dict):
        return ["must be an object"]
    problems = [
        f"unknown field {key!r} (a description goes in metadata)" for key in flag if key not in FIELDS
    ]
    if flag.get("state") not in ("ENABLED", "DISABLED"):
        problems.append(f"state must be ENABLED or DISABLED, not {flag.get('state')!r}")
    variants = flag.get("variants")
    if not isinstance(variants, dict) or not variants:
        return [*problems, "variants must be a non-empty object"]
    default = flag.get("defaultVariant")
    if default is not None and default not in variants:
        problems.append(f"defaultVariant {default!r} is not one of its variants ({', '.join(variants)})")
    for named in _variants_named_by(flag.get("targeting")):
        if named not in variants:
            problems.append(f"targeting names variant {named!r}, which it does not have")
    metadata = flag.get("metadata", {})
    if not isinstance(metadata, dict) or any(isinstance(v, (dict, list)) for v in metadata.values()):
        problems.append("metadata must be an object of plain values")
    return problems


def _variants_named_by(rule: Any) -> Iterator[str]:
    """Variant names a targeting rule can answer: the results of `if` and the buckets of `fractional`."""
    if isinstance(rule, dict):
        for op, args in rule.items():
            if op == "if" and isinstance(args, list):
                for index, arg in enumerate(args):
                    if index % 2 == 1 or index == len(args) - 1:  # the then/else positions
                        if isinstance(arg, str):
                            yield arg
                        else:
                            yield from _variants_named_by(arg)
            elif op == "fractional" and isinstance(args, list):
                for bucket in args:
                    if isinstance(bucket, list) and bucket and isinstance(bucket[0], str):
                        yield bucket[0]


class FlagFile:
    """The flag file at `path` and its history beside it (`<name>.history.jsonl`)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.history_path = self.path.with_name(self.path.name + ".history.jsonl")

    def read(self) -> dict[str, Any]:
        """The document as it is now; FlagFileError says what is wrong with it."""
        try:
            document = json.loads(self.path.read_text())
        except FileNotFoundError:
            raise FlagFileError(f"{self.path}: no flag file (boutique up seeds one)") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FlagFileError(f"{self.path}: not JSON ({exc})") from None
        problems = check_document(document)
        if problems:
            raise FlagFileError(f"{self.path}: " + "; ".join(problems))
        return document  # type: ignore[no-any-return]

    def seed(self) -> list[str]:
        """Create the file from the shipped one, or add flags it lacks; the names of flags not at default."""
        with self._locked():
            if not self.path.exists():
                self._write(shipped())
                return []
            document = self.read()
            missing = {k: v for k, v in shipped()["flags"].items() if k not in document["flags"]}
            if missing:
                document["flags"].update(missing)
                self._write(document)
        return [view.name for view in self.views() if not view.is_default]

    def views(self) -> list[FlagView]:
        """Every flag with its description, current variant and last change."""
        document = self.read()
        defaults = shipped()["flags"]
        last = self.last_changes()
        views = []
        for name, flag in document["flags"].items():
            metadata = flag.get("metadata") or {}
            shipped_default = defaults.get(name, flag).get("defaultVariant") or ""
            views.append(
                FlagView(
                    name=name,
                    description=str(metadata.get(DESCRIPTION_KEY, "")),
                    variants=flag["variants"],
                    variant=metadata.get(VARIANT_KEY) or flag.get("defaultVariant") or "",
                    default_variant=shipped_default,
                    rule=metadata.get(RULE_KEY, ""),
                    enabled=flag["state"] == "ENABLED",
                    last_change=last.get(name),
                )
            )
        return views

    def view(self, name: str) -> FlagView:
        """One flag; FlagFileError when there is none of that name."""
        for view in self.views():
            if view.name == name:
                return view
        raise FlagFileError(f"no flag named {name!r}")

    def set(
        self,
        name: str,
        variant: str,
        by: str,
        when: dict[str, str] | None = None,
        percent: float | None = None,
    ) -> Change:
        """Set `name` to `variant`, for every evaluation or only those matching `when` and `percent`."""
        if percent is not None and not 0 < percent <= 100:
            raise FlagFileError(f"percent must be in (0, 100], got {percent}")
        for key, value in (when or {}).items():
            if not key or not isinstance(value, str) or not value:
                raise FlagFileError(f"targeting needs key=value, got {key!r}={value!r}")
        with self._locked():
            document = self.read()
            flag = document["flags"].get(name)
            if flag is None:
                raise FlagFileError(f"no flag named {name!r} (see `boutique flags list`)")
            if variant not in flag["variants"]:
                raise FlagFileError(
                    f"{name} has no variant {variant!r} (choose from {', '.join(flag['variants'])})"
                )
            previous = self._describe(flag)
            shipped_flag = shipped()["flags"].get(name, {})
            neutral = shipped_flag.get("defaultVariant", flag.get("defaultVariant"))
            rule = _rule_text(when, percent)
            flag["state"] = "ENABLED"
            metadata = {
                k: v for k, v in (flag.get("metadata") or {}).items() if k not in (RULE_KEY, VARIANT_KEY)
            }
            if rule:
                flag["defaultVariant"] = neutral
                flag["targeting"] = _targeting(variant, neutral, when or {}, percent)
                metadata |= {RULE_KEY: rule, VARIANT_KEY: variant}
            else:
                flag["defaultVariant"] = variant
                if "targeting" in shipped_flag:
                    flag["targeting"] = copy.deepcopy(shipped_flag["targeting"])
                else:
                    flag.pop("targeting", None)
            flag["metadata"] = metadata
            self._write(document)
            change = Change(time.time(), name, variant, previous, by, rule)
            self._remember(change)
        return change

    def reset(self, by: str, names: list[str] | None = None) -> list[Change]:
        """Put flags (default: every one) back as shipped; the changes made."""
        changes = []
        with self._locked():
            document = self.read()
            defaults = shipped()["flags"]
            for name in names or list(document["flags"]):
                if name not in document["flags"]:
                    raise FlagFileError(f"no flag named {name!r}")
                if name not in defaults or document["flags"][name] == defaults[name]:
                    continue
                previous = self._describe(document["flags"][name])
                document["flags"][name] = copy.deepcopy(defaults[name])
                changes.append(Change(time.time(), name, defaults[name]["defaultVariant"], previous, by))
            if changes:
                self._write(document)
                for change in changes:
                    self._remember(change)
        return changes

    def restore(self, name: str, flag: dict[str, Any], by: str) -> Change | None:
        """Put one flag back exactly as `flag` (an entry read earlier); None when it is so already."""
        problems = _check_flag(flag)
        if problems:
            raise FlagFileError(f"{name}: " + "; ".join(problems))
        with self._locked():
            document = self.read()
            if name not in document["flags"]:
                raise FlagFileError(f"no flag named {name!r}")
            if document["flags"][name] == flag:
                return None
            previous = self._describe(document["flags"][name])
            document["flags"][name] = copy.deepcopy(flag)
            self._write(document)
            rule = (flag.get("metadata") or {}).get(RULE_KEY, "")
            change = Change(time.time(), name, self._describe(flag), previous, by, rule)
            self._remember(change)
        return change

    def history(self, since: float = 0.0) -> list[Change]:
        """Changes made through this module since `since` (Unix seconds), oldest first."""
        try:
            lines = self.history_path.read_text().splitlines()
        except FileNotFoundError:
            return []
        changes = []
        for line in filter(None, lines):
            try:
                change = Change(**json.loads(line))
            except (ValueError, TypeError):
                continue  # a line cut short by a crash: the others still count
            if change.time >= since:
                changes.append(change)
        return changes

    def last_changes(self) -> dict[str, Change]:
        """The latest change of each flag."""
        return {change.flag: change for change in self.history()}

    @staticmethod
    def _describe(flag: dict[str, Any]) -> str:
        metadata = flag.get("metadata") or {}
        return str(metadata.get(VARIANT_KEY) or flag.get("defaultVariant") or "")

    def _write(self, document: dict[str, Any]) -> None:
        """Replace the file atomically: a reader sees the old document or the new one, never half."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=".flags-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(document, out, indent=2)
                out.write("\n")
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temporary, 0o644)
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise

    def _remember(self, change: Change) -> None:
        """Append one line; a line a crash cut short is ended first, so it costs only itself.

        The change is already made when this runs, so a history that cannot be written (a full disk)
        is logged, not raised: the caller must not be told a change that happened did not.
        """
        try:
            with open(self.history_path, "ab+") as out:
                torn = out.tell() > 0 and (out.seek(-1, os.SEEK_END), out.read(1))[1] != b"\n"
                out.write((b"\n" if torn else b"") + json.dumps(asdict(change)).encode() + b"\n")
        except OSError as exc:
            log.warning("flags: %s set, but its history could not be written (%s)", change.flag, exc)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time across processes (the CLI and the observatory may both write)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def local_user() -> str:
    """`local user <name>`: who a change made on this machine without a token is recorded as."""
    try:
        name = getpass.getuser()
    except (OSError, KeyError):
        name = f"uid {os.getuid()}"
    return f"local user {name}"


def _rule_text(when: dict[str, str] | None, percent: float | None) -> str:
    parts = [f"{key}={value}" for key, value in sorted((when or {}).items())]
    if percent is not None and percent < 100:
        parts.append(f"{percent:g}%")
    return ", ".join(parts)


def _targeting(variant: str, neutral: str, when: dict[str, str], percent: float | None) -> dict[str, Any]:
    """A flagd targeting rule: `variant` where every `when` matches, for `percent` of evaluations."""
    chosen: Any = variant
    if percent is not None and percent < 100:
        chosen = {"fractional": [[variant, percent], [neutral, 100 - percent]]}
    conditions = [{"==": [{"var": key}, value]} for key, value in sorted(when.items())]
    if not conditions:
        return chosen if isinstance(chosen, dict) else {"if": [True, chosen, neutral]}
    test = conditions[0] if len(conditions) == 1 else {"and": conditions}
    return {"if": [test, chosen, neutral]}

"""`boutique flags list | set | reset`: the shop's feature flags from the command line.

The file is the one `boutique up` hands every process: `--file`, else FLAGD_OFFLINE_FLAG_SOURCE_PATH,
else `<data dir>/flags.json` (`--data-dir`, default $BOUTIQUE_DATA_DIR or ./.boutique). Running processes
pick a change up within a second. Changes go through `boutique.flags.FlagFile` (checked, atomic, kept as
history) and are recorded as made by `local user <name>`. A mistake is one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TextIO

from boutique.flags import Change, FlagFile, FlagFileError, FlagView, local_user

FLAG_FILE = "flags.json"  # its name in the data directory, as `boutique up` seeds it
EXIT_USAGE = 2
BOLD_YELLOW, RESET = "\033[1;33m", "\033[0m"


def flag_file_path(args: argparse.Namespace) -> Path:
    """The flag file `boutique up` uses for these options and this environment."""
    if args.file:
        return Path(args.file)
    if os.environ.get("FLAGD_OFFLINE_FLAG_SOURCE_PATH"):
        return Path(os.environ["FLAGD_OFFLINE_FLAG_SOURCE_PATH"])
    data_dir = args.data_dir or Path(os.environ.get("BOUTIQUE_DATA_DIR") or ".boutique")
    return Path(data_dir) / FLAG_FILE


def parse_when(items: list[str]) -> dict[str, str]:
    """`--when key=value` options as a dict; FlagFileError for one without `=`, a key or a value."""
    when: dict[str, str] = {}
    for item in items:
        key, equals, value = item.partition("=")
        if not equals or not key.strip() or not value.strip():
            raise FlagFileError(f"--when wants key=value (e.g. caller=frontend), not {item!r}")
        when[key.strip()] = value.strip()
    return when


def ago(seconds: float) -> str:
    """How long ago, roughly: `just now`, `42s ago`, `3m ago`, `2d ago`."""
    whole = int(seconds)
    if whole < 1:
        return "just now"
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if whole >= size:
            return f"{whole // size}{unit} ago"
    return f"{whole}s ago"


def last_change_text(change: Change | None, now: float) -> str:
    """When and by whom a flag last changed."""
    return f"{ago(now - change.time)} by {change.by}" if change else "never"


def setting_text(view: FlagView) -> str:
    """The variant, marked when the flag is disabled."""
    return view.variant if view.enabled else f"{view.variant} (disabled)"


def table(views: list[FlagView], colour: bool, now: float) -> list[str]:
    """The rows of `list`: a star and (on a terminal) colour for every flag not as shipped."""
    rows = [("", "FLAG", "VARIANT", "RULE", "LAST CHANGE", "DESCRIPTION")]
    rows += [
        (
            " " if view.is_default else "*",
            view.name,
            setting_text(view),
            view.rule or "-",
            last_change_text(view.last_change, now),
            view.description,
        )
        for view in views
    ]
    widths = [max(len(row[k]) for row in rows) for k in range(5)]
    lines = []
    for index, row in enumerate(rows):
        line = "  ".join(cell.ljust(width) for cell, width in zip(row[:5], widths, strict=True))
        line = f"{line}  {row[5]}".rstrip()
        if colour and index and row[0] == "*":
            line = f"{BOLD_YELLOW}{line}{RESET}"
        lines.append(line)
    return lines


def list_flags(file: FlagFile, out: TextIO) -> int:
    """Print every flag: variant, rule, last change, description."""
    views = file.views()
    colour = out.isatty() and not os.environ.get("NO_COLOR")
    print(f"flag file: {file.path}", file=out)
    for line in table(views, colour, time.time()):
        print(line, file=out)
    changed = sum(1 for view in views if not view.is_default)
    if changed:
        plural = "s" if changed != 1 else ""
        print(f"* {changed} flag{plural} not as shipped (`boutique flags reset` puts them back)", file=out)
    else:
        print("every flag as shipped", file=out)
    return 0


def set_flag(file: FlagFile, args: argparse.Namespace, out: TextIO) -> int:
    """Set one flag; print what changed."""
    when = parse_when(args.when or [])
    change = file.set(args.name, args.variant, local_user(), when or None, args.percent)
    rule = f" when {change.rule}" if change.rule else ""
    print(f"{change.flag}: {change.previous} → {change.variant}{rule} ({file.path})", file=out)
    return 0


def reset_flags(file: FlagFile, args: argparse.Namespace, out: TextIO) -> int:
    """Put the named flags (default: every one) back as shipped; print each change."""
    changes = file.reset(local_user(), list(dict.fromkeys(args.names)) or None)
    for change in changes:
        print(f"{change.flag}: {change.previous} → {change.variant} (as shipped)", file=out)
    if not changes:
        which = "those flags are" if args.names else "every flag is"
        print(f"nothing to reset: {which} as shipped", file=out)
    return 0


def run_flags(args: argparse.Namespace) -> int:
    """Run `boutique flags <list|set|reset>`; 2 with one line on stderr for a mistake."""
    file = FlagFile(flag_file_path(args))
    commands = {
        "list": lambda: list_flags(file, sys.stdout),
        "set": lambda: set_flag(file, args, sys.stdout),
        "reset": lambda: reset_flags(file, args, sys.stdout),
    }
    try:
        return commands[args.flags_command]()
    except (FlagFileError, OSError) as exc:
        print(f"boutique flags {args.flags_command}: {exc}", file=sys.stderr)
        return EXIT_USAGE

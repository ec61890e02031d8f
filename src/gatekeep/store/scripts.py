"""Assembly of the Redis store's Lua scripts from the files in `store/lua/`.

Each operation's script is the tuning constants, the shared prelude (`common.lua`, then
`control.lua`) and the operation's own code. Redis runs the whole chunk on every call, and
each function definition it passes builds a closure, even when the operation never calls it.
Before pruning, defining the prelude took about 16 of the 40 µs of a status poll's script,
measured with INFO commandstats. So the prelude is pruned per script: a
top-level definition is kept only when the operation's code needs it, directly or through
other kept definitions. Any top-level statement that defines nothing is always kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from gatekeep.store.constants import (
    AUDIT_RETENTION_S,
    ENTRY_RETENTION_S,
    OBSERVED_RATE_MIN_WINDOW_S,
    OBSERVED_RATE_TAU_S,
    PURGE_BATCH,
    RELEASE_BURST_S,
    SEQ_SPAN,
    TTL_REFRESH_SLACK_S,
)

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
COMMENT = re.compile(r"--[^\n]*")
DEFINITION = re.compile(r"local (?:function )?([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True, slots=True)
class _Block:
    """One top-level statement of the prelude with the comment lines just above it."""

    text: str
    defines: str | None  # the local it defines, or None for any other statement
    uses: frozenset[str]


def lua_constants() -> str:
    """Return Lua locals for the tuning values, so constants.py stays their only source."""
    return "\n".join(
        [
            "-- Tuning values from gatekeep.store.constants, written when the scripts load.",
            f"local ENTRY_RETENTION_MS = {round(ENTRY_RETENTION_S * 1000)}",
            f"local PURGE_BATCH = {PURGE_BATCH}",
            f"local TTL_REFRESH_SLACK_MS = {round(TTL_REFRESH_SLACK_S * 1000)}",
            f"local SEQ_SPAN = {SEQ_SPAN}",
            f"local RELEASE_BURST_S = {float(RELEASE_BURST_S)!r}",
            f"local OBSERVED_RATE_TAU_S = {float(OBSERVED_RATE_TAU_S)!r}",
            f"local OBSERVED_RATE_MIN_WINDOW_S = {float(OBSERVED_RATE_MIN_WINDOW_S)!r}",
            f"local AUDIT_RETENTION_MS = {round(AUDIT_RETENTION_S * 1000)}",
            "",
        ]
    )


def assemble(code: str) -> str:
    """Return a runnable script: the prelude pruned to what `code` needs, then `code`."""
    prelude = "\n".join([lua_constants(), _lua_file("common"), _lua_file("control")])
    return f"{prune_prelude(prelude, code)}\n{code}"


def script_source(name: str) -> str:
    """Return the Lua source of one operation: the pruned prelude, then `NAME.lua`."""
    return assemble(_lua_file(name))


def token_script_source(name: str) -> str:
    """Return the Lua source of one token operation: token_common.lua comes before its body."""
    return assemble(f"{_lua_file('token_common')}\n{_lua_file(name)}")


def ops_script_source(name: str) -> str:
    """Return the Lua source of one operations script.

    join_with_code gets join.lua's body as the local function `run_join`, so a join with a
    priority code runs exactly the plain join's steps.
    """
    if name != "join_with_code":
        return script_source(name)
    run_join = f"local function run_join()\n{_lua_file('join')}\nend\n"
    return assemble(f"{run_join}\n{_lua_file(name)}")


def prune_prelude(prelude: str, code: str) -> str:
    """Return the statements of `prelude` that `code` needs (see the module docstring)."""
    blocks = _split_blocks(prelude)
    definitions = {block.defines: block for block in blocks if block.defines is not None}
    pending = [name for name in _identifiers(code) if name in definitions]
    for block in blocks:
        if block.defines is None:
            pending.extend(name for name in block.uses if name in definitions)

    needed: set[str] = set()
    while pending:
        name = pending.pop()
        if name in needed:
            continue
        needed.add(name)
        pending.extend(used for used in definitions[name].uses if used in definitions)

    statements = [
        block.text for block in blocks if block.defines is None or block.defines in needed
    ]
    return "\n".join(statements)


def _split_blocks(prelude: str) -> list[_Block]:
    """Split the prelude into top-level statements, each with its leading comment lines.

    A function runs from `local function` to the first `end` in column 0; any other statement
    runs until its brackets balance. The prelude's files keep to that layout.
    """
    blocks: list[_Block] = []
    lines = prelude.split("\n")
    comments: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if not line.strip() or line.startswith("--"):
            comments.append(line)
            index += 1
            continue

        start = index
        if line.startswith("local function "):
            while lines[index] != "end":
                index += 1
        else:
            depth = _bracket_depth(line)
            while depth > 0:
                index += 1
                depth += _bracket_depth(lines[index])
        statement = "\n".join(lines[start : index + 1])
        index += 1

        defined = DEFINITION.match(statement)
        body = statement[defined.end() :] if defined else statement
        blocks.append(
            _Block(
                text="\n".join([*comments, statement]),
                defines=defined.group(1) if defined else None,
                uses=frozenset(_identifiers(body)),
            )
        )
        comments = []
    if comments:
        blocks.append(_Block(text="\n".join(comments), defines=None, uses=frozenset()))
    return blocks


def _identifiers(code: str) -> list[str]:
    """Return the names in `code` outside comments (names inside strings count too)."""
    return IDENTIFIER.findall(COMMENT.sub("", code))


def _bracket_depth(line: str) -> int:
    code = line.split("--", 1)[0]
    return code.count("{") + code.count("(") - code.count("}") - code.count(")")


def _lua_file(name: str) -> str:
    return resources.files("gatekeep.store").joinpath("lua", f"{name}.lua").read_text("utf-8")

"""No import cycle among boutique's modules: each module can be read (and changed) after the ones it imports.

The graph is grimp's (the one import-linter checks the layers on), so imports inside functions and
under TYPE_CHECKING count too: a cycle hidden in a function is still a cycle for the reader.
"""

from __future__ import annotations

import itertools

import grimp


def strongly_connected(graph: grimp.ImportGraph) -> list[list[str]]:
    """Every group of two or more modules that import each other, directly or around a loop (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            module, targets = work[-1]
            for target in targets:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph.find_modules_directly_imported_by(target)))))
                    break
                if target in on_stack:
                    low[module] = min(low[module], index[target])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[module])
                if low[module] == index[module]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == module:
                            break
                    if len(group) > 1:
                        groups.append(sorted(group))
    return groups


def a_cycle(graph: grimp.ImportGraph, group: list[str]) -> list[str]:
    """One loop through the group, as a readable chain: first -> ... -> first."""
    first = group[0]
    for target in sorted(graph.find_modules_directly_imported_by(first)):
        if target in group:
            back = graph.find_shortest_chain(importer=target, imported=first)
            if back is not None:
                return [first, *back]
    return group


def describe(graph: grimp.ImportGraph, group: list[str]) -> str:
    """The modules of the group, then one loop through them with the line of each import in it."""
    chain = a_cycle(graph, group)
    lines = [f"{len(group)} modules import each other: {', '.join(group)}", " -> ".join(chain)]
    for importer, imported in itertools.pairwise(chain):
        for detail in graph.get_import_details(importer=importer, imported=imported)[:1]:
            lines.append(f"  {importer}:{detail['line_number']}: {detail['line_contents']}")
    return "\n".join(lines)


def test_strongly_connected_finds_a_loop_and_nothing_else() -> None:
    graph = grimp.ImportGraph()
    for module in ("a", "b", "c", "d"):
        graph.add_module(module)
    graph.add_import(importer="a", imported="b")
    graph.add_import(importer="b", imported="c")
    graph.add_import(importer="c", imported="a")
    graph.add_import(importer="c", imported="d")
    assert strongly_connected(graph) == [["a", "b", "c"]]
    assert a_cycle(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]
    graph.remove_import(importer="c", imported="a")
    assert strongly_connected(graph) == []


def test_no_import_cycle_among_boutique_modules() -> None:
    graph = grimp.build_graph("boutique", cache_dir=None)
    cycles = [describe(graph, group) for group in strongly_connected(graph)]
    print(f"{len(graph.modules)} modules, {len(cycles)} import cycles")
    assert not cycles, "import cycles:\n" + "\n".join(cycles)

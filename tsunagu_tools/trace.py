"""``tsunagu trace CONTACT_ID``: one contact's trace as a tree, read from the span files that
``tsunagu up --telemetry`` has the services write (no collector needed)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.tree import Tree

from tsunagu.telemetry import contact_root


def read_spans(directory: Path) -> list[dict[str, Any]]:
    spans: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*-spans.jsonl")):
        with path.open(encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        spans.append(json.loads(line))
                    except json.JSONDecodeError:  # a line being written right now
                        continue
    return spans


def contact_trace(spans: Iterable[dict[str, Any]], contact_id: str) -> list[dict[str, Any]]:
    """The spans of contact ``contact_id``'s trace, oldest first."""
    trace_id = f"{contact_root(contact_id).trace_id:032x}"
    return sorted((s for s in spans if s["trace_id"] == trace_id), key=lambda s: s["start"])


def span_tree(spans: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """(depth, span) in tree order; a span whose parent is not in the files hangs at the top."""
    ids = {s["span_id"] for s in spans}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for s in spans:
        parent = s.get("parent_span_id")
        children.setdefault(parent if parent in ids else None, []).append(s)
    out: list[tuple[int, dict[str, Any]]] = []

    def walk(parent: str | None, depth: int) -> None:
        for s in sorted(children.get(parent, []), key=lambda s: s["start"]):
            out.append((depth, s))
            walk(s["span_id"], depth + 1)

    walk(None, 0)
    return out


def label(span: dict[str, Any], t0: int) -> str:
    a = span.get("attributes") or {}
    what = a.get("tsunagu.event.type") or a.get("messaging.destination.name") or ""
    took = ((span.get("end") or span["start"]) - span["start"]) / 1e6
    status = "" if span.get("status") in (None, "UNSET", "OK") else f" [red]{span['status']}[/red]"
    return (f"[bold]{span.get('service') or '?'}[/bold] {span['name']} [dim]{what}[/dim] "
            f"+{(span['start'] - t0) / 1e6:.1f} ms, {took:.1f} ms{status}")


def recent_contacts(spans: Iterable[dict[str, Any]], n: int = 10) -> list[str]:
    """The contact ids of the newest contact roots in the files (intake records one per new contact)."""
    roots = sorted((s for s in spans if s["name"] == "contact"), key=lambda s: s["start"], reverse=True)
    return [s["attributes"].get("tsunagu.contact_id", "?") for s in roots[:n]]


def trace(
    contact_id: Annotated[str | None, typer.Argument(
        help="the contact id (as partners send it); omitted: list the newest contacts in the files")] = None,
    directory: Annotated[Path | None, typer.Option(
        "--dir", help="span files folder (default: TSUNAGU_TELEMETRY_DIR or .tsunagu/telemetry)")] = None,
) -> None:
    """Print one contact's trace — intake, routing, referral, metrics — from `tsunagu up --telemetry` files
    (without a contact id: the newest contacts there)."""
    from tsunagu.settings import get_settings
    from tsunagu_tools.stack import telemetry_dir

    folder = directory or telemetry_dir(get_settings())
    console = Console()
    every = read_spans(folder)
    if contact_id is None:
        recent = recent_contacts(every)
        hint = f"no contacts in {folder} (started with `tsunagu up --telemetry`?)"
        console.print("\n".join(recent) if recent else hint)
        raise typer.Exit(0 if recent else 1)
    spans = contact_trace(every, contact_id)
    if not spans:
        console.print(f"no spans of contact {contact_id} in {folder} (started with `tsunagu up --telemetry`?)")
        raise typer.Exit(1)
    t0 = spans[0]["start"]
    root = Tree(f"contact {contact_id} · trace {spans[0]['trace_id']} · {len(spans)} spans")
    nodes: dict[str, Tree] = {}
    for depth, span in span_tree(spans):
        parent = nodes.get(span.get("parent_span_id") or "") if depth else None
        nodes[span["span_id"]] = (parent or root).add(label(span, t0))
    console.print(root)

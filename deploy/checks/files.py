"""What is checked outside the overlays: no Secret with data anywhere under deploy/, the Dockerfile's
static facts (no Docker engine here to build it), and the dashboard's panels and metric names."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from .render import ROOT
from .workloads import DEPLOY_README, SECRET_NAME

DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
DASHBOARD = ROOT / "deploy" / "grafana" / "tsunagu-ops.json"


def committed_secrets() -> list[str]:
    """Any Secret with data in any YAML under deploy/ (rendered or not)."""
    problems = []
    for path in sorted((ROOT / "deploy").rglob("*.y*ml")):
        try:
            docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        except yaml.YAMLError as err:
            problems.append(f"{path.relative_to(ROOT)}: not YAML: {err}")
            continue
        for d in docs:
            if isinstance(d, dict) and d.get("kind") == "Secret" and (d.get("data") or d.get("stringData")):
                problems.append(f"{path.relative_to(ROOT)}: Secret {d.get('metadata', {}).get('name')} with data")
            if isinstance(d, dict) and ("secretGenerator" in d):
                problems.append(f"{path.relative_to(ROOT)}: secretGenerator: secrets are created out of band")
    return problems


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        buf += " " + stripped[:-1] if stripped.endswith("\\") else " " + stripped
        if not stripped.endswith("\\"):
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def check_dockerfile(path: Path = DOCKERFILE, makefile: Path = ROOT / "Makefile") -> list[str]:
    where = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
    if not path.is_file():
        return [f"{where}: missing"]
    ins = dockerfile_instructions(path.read_text(encoding="utf-8"))
    args = {}
    for word, rest in ins:
        if word == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            args.setdefault(key.strip(), value.strip().strip('"'))

    def expand(s: str) -> str:
        return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), s)

    problems: list[str] = []
    froms = [i for i, (w, _) in enumerate(ins) if w == "FROM"]
    if len(froms) < 2:
        problems.append(f"{where}: not multi-stage (a builder stage and a final stage)")
        return problems
    final = ins[froms[-1]:]
    builder = ins[froms[0]:froms[-1]]
    base = expand(ins[froms[-1]][1].split()[0])
    if not base.startswith("python:3.11-slim"):
        problems.append(f"{where}: the final stage is {base}, not python:3.11-slim")
    runs = " ".join(rest for w, rest in builder if w == "RUN")
    expanded_runs = expand(runs)
    if "uv sync" not in runs or "--frozen" not in runs or "--no-dev" not in runs:
        problems.append(f"{where}: the builder does not install the lock with `uv sync --frozen --no-dev`")
    if not any(w == "COPY" and "uv.lock" in rest for w, rest in builder):
        problems.append(f"{where}: the builder does not copy uv.lock")
    make_text = makefile.read_text(encoding="utf-8") if makefile.is_file() else ""
    m = re.search(r"^UV_VERSION\s*:=\s*(\S+)", make_text, re.M)
    if m and f"uv=={m.group(1)}" not in expanded_runs:
        problems.append(f"{where}: uv is not pinned to the Makefile's UV_VERSION {m.group(1)}")
    users = [expand(rest) for w, rest in final if w == "USER"]
    if not users:
        problems.append(f"{where}: no USER in the final stage (it would run as root)")
    else:
        user = users[-1].split(":")[0]
        if user in ("root", "0") or not user.isdigit():
            problems.append(f"{where}: USER {users[-1]} must be a numeric non-root uid (runAsNonRoot checks it)")
    env = " ".join(expand(rest) for w, rest in final if w == "ENV")
    if not re.search(r"PYTHONUNBUFFERED=1\b", env):
        problems.append(f"{where}: PYTHONUNBUFFERED=1 is not set in the final stage")
    for w, rest in ins:
        if w in ("ENV", "ARG") and SECRET_NAME.search(rest.split("=")[0]):
            problems.append(f"{where}: {w} {rest.split('=')[0]} looks like a secret baked into the image")
    starts = " ".join(rest for w, rest in final if w in ("ENTRYPOINT", "CMD"))
    if not re.search(r"python.*-m.*\bservices\.[a-z]+\b", starts):
        problems.append(f"{where}: the image does not start python -m services.<name>")
    for module in sorted({m for m in re.findall(r"\bservices\.([a-z]+)\b", starts)}):
        if not (ROOT / "services" / module / "__main__.py").is_file():
            problems.append(f"services/{module}/__main__.py (the image's entry point) does not exist")
    for w, rest in final:
        if w == "COPY" and "--from" not in rest:
            for src in rest.split()[:-1]:
                if not src.startswith("--") and not (ROOT / src).exists():
                    problems.append(f"{where}: COPY {src}: no such path in the repository")
    for w, rest in final:
        if w == "COPY" and "--from" in rest and "/src" in rest:
            problems.append(f"{where}: the final stage copies the builder's sources; only the venv and the code")
    return problems


METRIC = re.compile(r"\b((?:tsunagu|kafka|kube)_[a-z0-9_]+)")
PANELS_NEEDED = ("answer rate", "queue", "busy", "wait", "lag", "routing", "rejected")


def dashboard_metrics(path: Path = DASHBOARD) -> tuple[set[str], str, list[str]]:
    """(metric names the queries read, without histogram suffixes; the panels' titles; problems)"""
    where = path.name
    try:
        board = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        return set(), "", [f"{where}: {err}"]
    problems: list[str] = []
    names: set[str] = set()
    panels = [p for p in board.get("panels") or [] if p.get("type") != "row"]
    if not panels:
        problems.append(f"{where}: no panels")
    for panel in panels:
        title = panel.get("title") or f"panel {panel.get('id')}"
        targets = panel.get("targets") or []
        if not targets or not all(t.get("expr") for t in targets):
            problems.append(f"{where}: {title}: every panel needs Prometheus targets with expr")
        for t in targets:
            names |= {re.sub(r"_(bucket|sum|count)$", "", n) for n in METRIC.findall(t.get("expr", ""))}
    titles = " ".join(str(p.get("title", "")).lower() for p in panels)
    return names, titles, problems


def check_dashboard(path: Path = DASHBOARD, readme: Path = DEPLOY_README) -> list[str]:
    """Valid JSON, the panels ops need, and every metric it reads documented in deploy/README.md."""
    names, titles, problems = dashboard_metrics(path)
    text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    for name in sorted(names):
        if f"`{name}`" not in text:
            problems.append(f"{path.name}: metric {name} is not documented in deploy/README.md")
    for word in PANELS_NEEDED if titles else ():
        if word not in titles:
            problems.append(f"{path.name}: no panel about {word}")
    return problems

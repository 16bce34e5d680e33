"""Trial-1 calibration: fit a scenario's free parameters in the dry run, check it on the real stack.

    python -m tsunagu_tools.simulate.calibrate fit scenarios/trial1.yaml    # dry run, prints fitted values
    python -m tsunagu_tools.simulate.calibrate check scenarios/trial1.yaml  # real services (`make calibrate`)

What is fitted (everything else in the scenario is a fact or an assumption, marked in the file):
the mean talk time of loneliness, suicidal feelings and hardship to their published answer rates,
the other fields' mean talk time to the overall answer rate, and the referral chances to the
number of serious handoffs. ``check`` replays the scenario through the running services and fails
when an answer rate is more than 1.5 points from the published one or the ranking differs.
"""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console

from tsunagu_tools.simulate.engine import dry_run
from tsunagu_tools.simulate.scenario import Scenario, load_scenario

TOLERANCE = 0.015  # answer rates within 1.5 points of the published ones
console = Console()


def misses(scenario: Scenario, figures: dict[str, Any]) -> list[str]:
    """Where the replayed figures miss the published ones (empty = calibrated)."""
    pub = scenario.published
    out = []
    if pub.attempts is not None and figures["attempts"] != pub.attempts:
        out.append(f"attempts {figures['attempts']} != {pub.attempts}")
    if pub.answer_rate is not None and abs(figures["answer_rate"] - pub.answer_rate) > TOLERANCE:
        out.append(f"answer rate {figures['answer_rate']:.3f} vs {pub.answer_rate:.3f}")
    for name, rate in pub.answer_rate_by_field.items():
        got = figures["by_field"].get(name, {}).get("answer_rate")
        if got is None or abs(got - rate) > TOLERANCE:
            out.append(f"{name} answer rate {got} vs {rate:.3f}")
    ranked = sorted(figures["by_field"], key=lambda k: -figures["by_field"][k]["attempts"])[:3]
    expected = list(pub.answer_rate_by_field)
    if expected and ranked != expected:
        out.append(f"ranking {ranked} != {expected}")
    return out


def fit(path: str, iterations: int = 6) -> Scenario:
    scenario = load_scenario(path)
    pub = scenario.published
    for i in range(iterations):
        figures = dry_run(scenario, run="fit").figures()
        talk = dict(scenario.counsellors.talk_s)
        for name, target in pub.answer_rate_by_field.items():
            got = figures["by_field"][name]["answer_rate"]
            # Saturated desks answer in proportion to 1 / talk time; an unsaturated one is less sensitive.
            power = 1.0 if target < 0.5 else 3.0
            talk[name] = round(talk.get(name, talk["default"]) * (got / target) ** power)
        others = [g for k, g in figures["by_field"].items() if k not in pub.answer_rate_by_field]
        if pub.connected is not None and others:
            want = pub.connected - sum(figures["by_field"][k]["connected"] for k in pub.answer_rate_by_field) \
                * 1.0
            have = sum(g["connected"] for g in others)
            if want > 0 and have > 0:
                talk["default"] = round(talk["default"] * (have / want))
        referral = dict(scenario.counsellors.referral_by_risk)
        if pub.referrals and figures["referrals"]:
            scale = pub.referrals / figures["referrals"]
            referral = {k: round(min(1.0, v * scale), 4) for k, v in referral.items()}
        console.print(f"fit {i}: rate {figures['answer_rate']:.3f} "
                      + " ".join(f"{k} {figures['by_field'][k]['answer_rate']:.3f}" for k in pub.answer_rate_by_field)
                      + f" referrals {figures['referrals']} → talk_s {talk} referral_by_risk {referral}")
        counsellors = scenario.counsellors.model_copy(update={"talk_s": talk, "referral_by_risk": referral})
        scenario = scenario.model_copy(update={"counsellors": counsellors})
    return scenario


def check(path: str) -> int:
    from tsunagu_tools.simulate.cli import replay_stack
    from tsunagu_tools.simulate.report import differences, metrics_figures, side_by_side

    scenario = load_scenario(path)
    truth, report = replay_stack(path, label=f"{scenario.name} (real services)")
    counted = metrics_figures(report)
    console.print(side_by_side([("replayed (metrics)", counted)], scenario.published.model_dump()))
    console.print(f"{truth.describe()} wall ({truth.sync_wall_s:.0f} s waiting); referrals {counted['referrals']}")
    problems = misses(scenario, counted) + differences(truth.figures(), counted)
    for p in problems:
        console.print(f"[red]{p}[/red]")
    console.print("[green]calibrated[/green]" if not problems else "[red]not calibrated[/red]")
    return 1 if problems else 0


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("fit", "check"):
        console.print(__doc__)
        return 2
    if argv[0] == "fit":
        fit(argv[1])
        return 0
    return check(argv[1])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

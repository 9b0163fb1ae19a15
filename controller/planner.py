"""The curriculum planner: ``plan(spec, …) -> [PlannedStep]`` — a pure, deterministic function.

(Contract stub; the planner itself is built with the spec.)
"""

from __future__ import annotations

from dataclasses import dataclass

from coe_runtime.step import StepConfig


@dataclass(frozen=True)
class PlannedStep:
    """One node of the plan DAG: the exact step config a pod or local subprocess receives."""

    name: str  # deterministic, DNS-1035-friendly (e.g. "steer-r2-train")
    config: StepConfig
    needs: tuple[str, ...] = ()  # names of steps whose outputs must be published first

    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def output(self) -> str:
        return self.config.output

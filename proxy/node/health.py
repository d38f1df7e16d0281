"""What a node says about its workers' health: read by /healthz and /readyz."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class NodeHealth:
    wanted: int  # workers the config asks for
    running: int
    listening: int
    behind_config: list[int]  # indexes of workers still on an older config (a reload under way)
    config_generation: int  # bumped by every config a SIGHUP accepted

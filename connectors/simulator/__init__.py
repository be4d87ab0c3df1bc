"""Customer-path simulator: realistic, deterministic load over the real code lists."""

from connectors.simulator.config import SimulationConfig
from connectors.simulator.paths import simulate

__all__ = ["SimulationConfig", "simulate"]

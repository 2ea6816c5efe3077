"""Guided failure scenarios: break one thing in a running shop, drive shoppers, show and check the evidence.

`boutique scenario list | run NAME` (see `command`). A scenario (`model.Scenario`) names its faults
(flags, process actions), its traffic, where its evidence shows in the observatory and the checks
that assert it; `catalogue` holds the shipped ones, `runner` runs one and puts everything back.
"""

from boutique.run.scenarios.catalogue import BY_NAME, SCENARIOS
from boutique.run.scenarios.model import Check, FlagSetting, Look, Scenario, Search, Traffic, Verdict

__all__ = ["BY_NAME", "SCENARIOS", "Check", "FlagSetting", "Look", "Scenario", "Search", "Traffic", "Verdict"]

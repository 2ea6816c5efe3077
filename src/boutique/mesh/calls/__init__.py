"""One call to a dependency as a short sequence of named steps, and the parts `Dependency` is made of.

`call` (the policy, and the state one call carries), `outcome` (status code → Outcome, one table),
`steps` (pick, permit, attempt, classify, retry), `membership` (instances and their connections),
`recovery` (health checks while the breaker is open), `stats` (the client call metrics).
"""

from boutique.mesh.calls.call import Call, CallPolicy
from boutique.mesh.calls.membership import Connector, Membership
from boutique.mesh.calls.outcome import OUTCOMES, CallStatus, Outcome, classify, status_of_error

__all__ = [
    "OUTCOMES",
    "Call",
    "CallPolicy",
    "CallStatus",
    "Connector",
    "Membership",
    "Outcome",
    "classify",
    "status_of_error",
]

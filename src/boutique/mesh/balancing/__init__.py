"""Client-side load balancing: per-instance endpoint state, balancing policies and outlier ejection."""

from boutique.mesh.balancing.endpoint import Endpoint
from boutique.mesh.balancing.outlier import EJECTED, RETURNED, OutlierDetector
from boutique.mesh.balancing.policies import (
    POLICIES,
    Balancer,
    LeastRequest,
    NoEndpointError,
    PeakEwma,
    Random,
    RoundRobin,
    make_balancer,
)

__all__ = [
    "EJECTED",
    "POLICIES",
    "RETURNED",
    "Balancer",
    "Endpoint",
    "LeastRequest",
    "NoEndpointError",
    "OutlierDetector",
    "PeakEwma",
    "Random",
    "RoundRobin",
    "make_balancer",
]

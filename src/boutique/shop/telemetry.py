"""The shop's tracer: spans around work worth seeing, children of the RPC or request being served.

A trace then shows checkout's steps, a currency conversion or a page render inside the call that did
them. Business counters live beside the code that counts them (checkout, cart), with bounded labels only.
"""

from __future__ import annotations

from opentelemetry import trace

tracer = trace.get_tracer("boutique.shop")

"""frontend: the shop's web site (Starlette + Jinja2), a thin HTTP face over the gRPC services."""

from boutique.shop.frontend.app import create_app
from boutique.shop.frontend.clients import FrontendClients
from boutique.shop.frontend.settings import FrontendSettings

__all__ = ["FrontendClients", "FrontendSettings", "create_app"]

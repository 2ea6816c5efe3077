"""boutique.shop: the application, eleven services that talk gRPC (and a web frontend)."""

"""cart: shopping carts keyed by user id, kept in memory or in Redis."""

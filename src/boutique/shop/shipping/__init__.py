"""shipping: quotes a flat shipping cost and issues tracking ids for shipped orders."""

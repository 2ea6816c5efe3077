"""recommendation: suggests catalog products the shopper is not already looking at."""

"""payment: validates credit cards (VISA and Mastercard only) and charges them, logging no card data."""

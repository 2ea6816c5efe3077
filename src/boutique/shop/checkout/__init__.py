"""checkout: places an order — prices the cart, charges the card, ships, empties the cart and mails a receipt."""

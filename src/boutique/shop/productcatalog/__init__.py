"""productcatalog: the products on sale, read from data shipped with the package."""

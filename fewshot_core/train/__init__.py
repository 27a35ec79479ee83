"""Training: data preparation from ../shared/data and the generator trainer."""

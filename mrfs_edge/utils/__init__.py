"""Small torch-free helpers shared across the toolkit."""

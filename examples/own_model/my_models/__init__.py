"""A user's own package: a model with a registered custom layer, a subclassed variant, and the
data they train it on. Nothing in it knows about the runner."""

"""Trains the digit CNN on MNIST and publishes versions into the model store."""

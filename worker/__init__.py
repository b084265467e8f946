"""Celery workers that hold the CNN in memory and answer predict tasks in micro-batches.

Importing this package does not import TensorFlow.
"""

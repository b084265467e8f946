"""The digit recogniser's shared pieces: settings, the API-worker wire contract, the local
stack runner and the ``digits`` command. Nothing here imports TensorFlow."""

"""docscore: body + head text classifiers from training to parity-gated ONNX bundles to batch scoring.

The package follows the data flow: ``model`` → ``train`` → ``export`` → ``batch``. Importing
``docscore`` (or ``docscore.batch``) never imports torch or transformers.
"""

__version__ = "0.1.0"

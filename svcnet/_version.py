"""svcnet's version, the single source: ``pyproject.toml`` reads it at build time
(``[tool.setuptools.dynamic]``) and :data:`svcnet.__version__` re-exports it."""

__version__ = "0.2.0"

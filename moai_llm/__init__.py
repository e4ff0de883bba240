"""moai_llm: the library behind the `moai` command.

Importing this package is cheap: torch and transformers are imported by the submodules that
need them, so `moai --help` stays instant.
"""

__version__ = "0.1.0"

"""moai_llm: the library behind the `moai` command.

Importing this package is cheap: torch and transformers are imported by the submodules that
need them, so `moai --help` stays instant.
"""

__version__ = "0.1.0"

import logging as _logging

# bitsandbytes (QLoRA, imported by peft when installed) logs a warning on every CPU import: it
# tries to fetch an optional CPU kernel from the hub, and moai never runs hub code unasked.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)
_logging.getLogger("kernels._internals.hf_hub").setLevel(_logging.ERROR)  # offline: says it skips that fetch

"""The `moai` command-line tool (Typer). Thin: parses, validates, renders; moai_llm does the work."""

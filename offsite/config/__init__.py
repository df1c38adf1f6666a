"""The YAML configuration: strict pydantic models, the rules types cannot say, the safe loader, the generated reference."""

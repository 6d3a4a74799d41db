"""The scoring server: request parsing, the Azure ML entry script, the local launcher and validation."""

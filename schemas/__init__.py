"""Artifact contracts: one JSON Schema (draft 2020-12) per artifact that crosses a component boundary."""

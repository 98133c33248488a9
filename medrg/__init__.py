"""MedRG: medical report grounding (placeholder until the core lands)."""

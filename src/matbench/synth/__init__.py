"""Procedural training data (MatSeg pattern infusion)."""

"""Tests of the MatSeg pattern-infusion generator (matbench.synth)."""

"""Simulators: Meta-World (MuJoCo) episode collection and closed-loop evaluation."""

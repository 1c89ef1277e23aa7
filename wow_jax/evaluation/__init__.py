"""Evaluations of trained models: pure functions of arrays and configs (idm.py: the FM-IDM's
action errors against baselines)."""

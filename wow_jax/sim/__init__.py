"""Simulators: Meta-World (MuJoCo) episode collection and closed-loop evaluation.

Importing this package registers the simulators' data sources in wow_jax.data's table
(config.data.source='metaworld'); wow_jax.data never imports wow_jax.sim.
"""

from wow_jax.sim import metaworld_collect  # noqa: F401 (registers the 'metaworld' data source)

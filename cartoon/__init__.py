"""Ray-free core (the Ray Data engine, `cartoon.batch.ray_engine`, aside) of the portrait cartoonization service.

Every stage of the served graph is a plain function or small class here; the
deployments in ``deployments/`` only hold loaded state and call into this package.
"""

"""What a user plugs in: base models (``models/*.yaml``) and knowledge sources (``datasets/*.yaml``).

A component is one small YAML file naming a ``family`` (the code that knows how to load it) and that family's
keys. Families are registered lazily in ``benchmark.registry``; their ``Spec`` classes below each family are the
schema of a component file.
"""

"""Copying a project's Cinder volumes between clouds (``stackhop volumes``).

:mod:`.model` holds the contract every copy method implements
(:class:`~stackhop.volumes.model.VolumeMethod`); :mod:`.storage` reads the
storage map that says how each cloud's volume backends are reached. The
methods (``rbd``, ``stream``, ``image``) and the orchestration (selection,
preflight, journal, backup, cleanup) build on those two.
"""

"""Small plugins the testbed's services load, as top-level modules.

This directory itself is put on the services' ``PYTHONPATH`` (uWSGI's
``--pythonpath``), so each module is imported by its own name
(``stackhop_bind_all``, ``stackhop_nfs_manageable``) from configuration:
importing them through the ``testbed`` package would drag the testbed into
the services.
"""

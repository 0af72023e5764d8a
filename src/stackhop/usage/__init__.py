"""The usage-history archive of a cloud: os-simple-tenant-usage read in full, split into months.

- :mod:`~stackhop.usage.fetch`: the compute usage API, every page, per project;
- :mod:`~stackhop.usage.months`: calendar months (UTC) and exact per-month figures;
- :mod:`~stackhop.usage.report`: charts (PNG) and the self-contained HTML report;
- :mod:`~stackhop.usage.writer`: the archive directory, written whole or not at all.
"""

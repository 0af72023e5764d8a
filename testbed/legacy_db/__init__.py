"""The databases the DB export must also read: src's on PostgreSQL, and Liberty-shaped ones.

SOC6's clouds ran Liberty on PostgreSQL; the live testbed runs today's
services on MariaDB. ``python -m testbed legacy-dbs`` (after ``seed``) makes:

- :mod:`~testbed.legacy_db.pg_mirror`: src's Keystone, Nova (main and API),
  Cinder and Neutron databases on the testbed's PostgreSQL, schemas made by
  the services' own code on PostgreSQL, rows copied from src's MariaDB;
- :mod:`~testbed.legacy_db.liberty`: ``src_liberty_{nova,neutron,cinder}``
  with the tables the DB export reads as Liberty's migrations left them, on
  MariaDB and on PostgreSQL, filled from src's seeded rows.

Every step is stamped with what it was made from, so a second run with
nothing changed does nothing. Nothing here touches a live service's database.
"""

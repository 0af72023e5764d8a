"""SDN controller migration: MidoNet from its legacy ZooKeeper topology to the Neutron importer.

The steps, each with its backup taken first and each journaled so that a
re-run resumes:

``prepare``   (:mod:`.prepare`) read the Neutron topology, queue create tasks
              in ``midonet_tasks`` in dependency order, write the importer
              settings and the controller objects Neutron does not know;
``backup``    (:mod:`.backup`) dump the ZooKeeper subtree to a checksummed
              file, verified against the live tree;
``switch``    (:mod:`.endpoints`) rewrite the controller API endpoints in the
              config files, keeping byte-exact backups;
``apply-settings`` / ``restart-neutron`` (:mod:`.cluster`) the seed's
              steps 3-4 on the cluster side: mn-conf settings (configuration
              saved first, restored byte for byte) and the neutron-server restart;
``recreate-controller-objects`` (:mod:`.recreate`) write back, after the
              import, the controller objects ``prepare`` saved;
``rollback``  (:mod:`.rollback`) restore the ZooKeeper subtree exactly, remove
              the queued tasks without resetting the task ID sequence, restore
              ``midonet_data_state``, the cluster configuration, revert the
              endpoints, restart neutron-server, and check all of it.

Every command takes ``dry_run``: the checks, then what each step would change.
"""

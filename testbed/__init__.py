"""The stackhop testbed.

Two real OpenStack clouds (src, dst) with Ceph, ZooKeeper and ssh hosts on loopback.
"""

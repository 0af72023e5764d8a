"""The stackhop testbed: two real OpenStack clouds (src, dst) with Ceph, ZooKeeper and ssh hosts on loopback."""

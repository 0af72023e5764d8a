"""Servers: a tenant's workloads moved with their volumes, ports and addresses (issue 19).

Built step by step (``docs/design/servers.md``): :mod:`stackhop.servers.gather` reads a
server as the source's API shows it, and names what cannot be carried.
"""

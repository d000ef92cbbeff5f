# -*- test-case-name: tests.test_cluster_directory -*-
"""
Several gateway nodes on one PostgreSQL: the shared call directory, the
heartbeat that ends a dead node's calls, and start/stop carried to the node
that holds a call's media.
"""

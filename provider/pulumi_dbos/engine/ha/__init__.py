"""High availability: instances made of several members under Patroni over etcd, on the engine's hosts
(network namespaces on one machine, the same code over SSH on real hosts). ``cluster`` is the local engine's
door to it; ``hosts``, ``etcd``, ``patroni`` and ``endpoint`` are its parts."""

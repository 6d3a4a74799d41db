"""How batch_score's workers share the CPUs: each gets its own, as an Azure ML parallel job gives each
process its share of a node."""

from __future__ import annotations

import os

import pytest

from mnist_mlops.components.batch_score.executor import cpu_shares


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="the platform cannot pin processes")
def test_workers_get_disjoint_cpus_that_cover_the_process_and_share_only_when_outnumbering_them():
    cpus = os.sched_getaffinity(0)
    for workers in range(1, len(cpus) + 1):
        shares = cpu_shares(workers)
        assert len(shares) == workers and all(shares)
        assert set().union(*shares) == cpus and sum(map(len, shares)) == len(cpus)
    one_each = cpu_shares(len(cpus) + 1)
    assert all(len(share) == 1 for share in one_each) and set().union(*one_each) == cpus

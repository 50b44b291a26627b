"""genfast/bench/malloc.py: the bench fixes glibc's thresholds (so fresh
outputs stop page-faulting) and says so in the report; --allocator system
leaves them."""

import platform
import resource

import pytest
import torch

from genfast.bench import cli, malloc

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def test_describe_system_changes_nothing():
    assert malloc.describe("system").startswith(("system", "glibc"))


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_tuned_stops_the_page_faults_of_fresh_big_outputs():
    assert malloc.describe("tuned").startswith("glibc, trim threshold 1 GiB")
    x = torch.randn(1 << 20)

    def two_outputs():  # the pattern that faulted: two fresh 4 MB blocks per call
        return x + 1, x * 2

    for _ in range(3):
        two_outputs()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        two_outputs()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert faults < 10 * 2 * 1024 // 10, f"{faults} minor faults in 10 calls"


def test_command_line_repeats_the_allocator():
    p = __import__("argparse").ArgumentParser()
    cli.add_arguments(p)
    assert "--allocator system" in cli.command_line(p.parse_args(["--allocator", "system"]))
    assert "--allocator" not in cli.command_line(p.parse_args([]))

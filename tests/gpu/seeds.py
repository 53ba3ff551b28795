"""The GPU tests' random seeds, the same in every process so that a printed seed replays a failure.

One seed per run (NVFP4_TEST_SEED sets it, else fresh) and one stream per test below it, keyed by
the CRC-32 of the test's node id: Python's ``hash()`` of a string is salted per process
(PYTHONHASHSEED), so a stream keyed by it could not be had again.
"""
import os
import secrets
import zlib

SEED = int(os.environ.get("NVFP4_TEST_SEED", secrets.randbits(32)))


def seed_for(nodeid: str) -> list[int]:
    """``numpy.random.default_rng`` seed of one test: the run's seed and its node id's CRC-32."""
    return [SEED, zlib.crc32(nodeid.encode())]

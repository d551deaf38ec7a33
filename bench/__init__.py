"""Benchmarks: ``python -m bench`` (``make bench``) runs them all and rewrites BENCHMARKS.md.

Scripts: ``bench.rest_latency`` (added latency of the REST path, cache miss and hit) and
``bench.import_time`` (import time of the REST handler module against ``import boto3``). Shared
statistics and timing helpers live in ``bench.common``. Performance is measured here, never by timed
tests.
"""

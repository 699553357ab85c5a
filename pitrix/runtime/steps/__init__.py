"""The steps of a cluster's plans, each idempotent and reading its inputs from etcd.

A step is a module-level ``async def step(ctx: JobContext, ...) -> str`` returning its detail line.
A step never trusts memory from an earlier step: nodes, instance ids and addresses are read back
from the node records, so a step re-run by a restarted daemon sees what its previous run left.
Instances are looked up by their deterministic names before any is created.
"""

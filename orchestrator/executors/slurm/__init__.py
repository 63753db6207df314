"""The Slurm executor: a run becomes a batch job (or one array job), submitted with sbatch,
tracked with one batched squeue (and sacct) query per poll cycle, and recorded.

- ``render``: the batch script, a pure function of the run (kept in the run's directory).
- ``parse``: Slurm's states and outputs -> orchestrator states (one table).
- ``commands``: the sbatch/squeue/sacct/scancel calls, their timeouts and error classes.
- ``executor``: submission, tracking, the circuit breaker, cancel and re-adoption.
"""

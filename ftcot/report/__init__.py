"""The report: the paper-style summary, its figures and documents, and sweeps read back from DVC
experiments (stage report, scripts/sweep.py; running the experiments is :mod:`ftcot.experiments`)."""

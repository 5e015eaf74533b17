"""What finds the irreproducible.

The audit, the doctor, the experiments they run, their findings, and the one batch
comparer.
"""

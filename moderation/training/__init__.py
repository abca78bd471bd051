"""Build time only: the data sets, training (the ``train`` extra: torch), evaluation and the fp16 variant.

Nothing on the serving path imports this package.
"""

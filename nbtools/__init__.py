"""nbtools: Direct Preference Optimization of vision-language models, from notebooks.

The package does all the work; the notebooks in ``notebooks/`` are thin faces over it.
Data flows one way: file -> records + problems -> training examples -> trainer -> run
folder -> evaluation -> export. Each arrow is one module's job (see README).
"""

__version__ = "0.1.0"

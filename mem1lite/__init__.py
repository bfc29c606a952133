"""mem1lite: MEM1 (arXiv 2506.15841) reproduced small enough for a laptop CPU."""

__version__ = "0.1.0"

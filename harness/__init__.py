"""harness: reference benchmark and evaluation harness for retrieval-augmented LLMs (SPRING, arXiv 2405.19670)."""

__version__ = "0.1.0"

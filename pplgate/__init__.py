"""pplgate: perplexity of GPT-2 ONNX models on wikitext-2, the vendor's way, on any onnxruntime provider.

The library behind ``python -m pplgate`` and the pytest gate (pytest_pplgate).
"""

__version__ = "0.1.0"

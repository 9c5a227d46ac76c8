"""The engine process: llama.cpp (llama-cpp-python) generation and embeddings."""

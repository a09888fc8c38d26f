"""The offline default: a real small LLM behind llama.cpp's OpenAI-compatible server on 127.0.0.1."""

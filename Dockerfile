# The bot and the ingestion command in one image: CPU PyTorch, the project, a non-root user.
#   docker build -t kb-assistant .
#   docker build --build-arg PRELOAD_EMBEDDING_MODEL=intfloat/multilingual-e5-base -t kb-assistant .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- builder: compilers for llama-cpp-python (built from source), everything into /opt/venv ----
FROM ${PYTHON_IMAGE} AS builder
# CMAKE_ARGS: a portable llama.cpp build (the image may run on another CPU than the builder's).
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CMAKE_ARGS="-DGGML_NATIVE=OFF"
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake git \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# CPU PyTorch from its own index first: the project's torch==2.13.0 pin is then satisfied by
# 2.13.0+cpu and pip never pulls the CUDA build (gigabytes the CPU-only bot does not use).
RUN pip install --upgrade pip \
    && pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
WORKDIR /src
COPY pyproject.toml README.md ./
COPY kb ./kb
COPY ingestion ./ingestion
COPY app ./app
# --no-binary: llama.cpp is compiled here with CMAKE_ARGS above, never taken prebuilt; the check
# refuses a build that uses AMX (some virtual machines advertise it and fault on it).
RUN pip install --no-binary llama-cpp-python . \
    && python -c "import torch; assert not torch.version.cuda, 'CUDA build of torch installed'" \
    && python -c "import llama_cpp, sys; info = llama_cpp.llama_print_system_info().decode(); print(info); sys.exit('AMX' in info)"

# ---- runtime: the virtualenv, the prompts, no compilers ----
FROM ${PYTHON_IMAGE} AS runtime
# libgomp1: OpenMP for llama.cpp.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --create-home --shell /usr/sbin/nologin app
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY --chown=app:app prompts ./prompts
# Data folders and the Hugging Face cache exist (owned by app) so that named volumes mounted
# there start with the right owner.
RUN mkdir -p /app/data /app/config /cache/huggingface \
    && chown -R app:app /app/data /app/config /cache
# The package is installed into the virtualenv, so CHAIN_PROMPTS_DIR points at the prompt files.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HOME=/cache/huggingface \
    CHAIN_PROMPTS_DIR=/app/prompts
USER app

# No model is downloaded at build time unless asked: the embedding model is fetched on first
# use into HF_HOME (a volume). With this argument it is baked into the image instead, and a
# fresh HF_HOME volume starts with it.
ARG PRELOAD_EMBEDDING_MODEL=""
RUN if [ -n "$PRELOAD_EMBEDDING_MODEL" ]; then \
        python -c 'import os; from sentence_transformers import SentenceTransformer; SentenceTransformer(os.environ["PRELOAD_EMBEDDING_MODEL"])'; \
    fi

VOLUME ["/app/data", "/cache/huggingface"]
EXPOSE 8080
CMD ["python", "-m", "app", "bot"]

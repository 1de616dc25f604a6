# The router image that `herd compose` runs (`langchain-herd:<version>`): the herd's
# OpenAI-compatible endpoint with Redis-shared state. No torch, no model: the experts run in
# their own TGI, vLLM or SGLang containers.
#
#   docker build -t langchain-herd:0.1.0 .
#   docker run -p 8000:8000 -e HERD_ROUTER_API_KEYS=... -v $PWD/my-herd.yaml:/config/herd.yaml:ro \
#     langchain-herd:0.1.0 herd serve-router /config/herd.yaml --host 0.0.0.0 --port 8000
FROM python:3.11-slim

WORKDIR /src
COPY pyproject.toml README.md ./
COPY langchain_herd ./langchain_herd
RUN pip install --no-cache-dir ".[router-server,redis]" && rm -rf /src

WORKDIR /
EXPOSE 8000
# A user without a login: the router needs no privileges.
RUN useradd --create-home --uid 10001 herd
USER herd
CMD ["herd", "serve-router", "/config/herd.yaml", "--host", "0.0.0.0", "--port", "8000"]

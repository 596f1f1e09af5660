# One image for all three services; the Helm chart (deploy/k8s) picks the entrypoint per container:
#   python -m services.api_gateway | services.text_engine | services.vision_engine
#
#   docker build -t REGISTRY/proxyvision:0.1.0 .                        # CUDA torch (GPU nodes)
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu \
#                -t REGISTRY/proxyvision:0.1.0-cpu .                    # CPU torch (smaller)
#
# Dependencies come from pyproject.toml (torch pinned there and only there); torch alone comes from
# TORCH_INDEX. The source tree is copied as is rather than pip-installed, because a wheel of the
# project would leave out the gateway's web page (services/api_gateway/static/).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# The PyTorch wheel index: CUDA 12.8 by default (Ampere, Hopper, Blackwell); .../whl/cpu for CPU only.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml ./
# requirements.txt: the runtime dependencies; tools.txt: grpcio-tools, only to generate the gRPC code.
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
open('requirements.txt', 'w').write('\n'.join(p['dependencies']) + '\n'); \
open('torch.txt', 'w').write(''.join(d for d in p['dependencies'] if d.startswith('torch=='))); \
open('tools.txt', 'w').write('\n'.join(d for d in p['optional-dependencies']['dev'] if d.startswith('grpcio-tools')) + '\n')"
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --index-url "${TORCH_INDEX}" -r torch.txt \
    && /opt/venv/bin/pip install -r requirements.txt \
    && python -m venv /opt/tools \
    && /opt/tools/bin/pip install -r tools.txt
COPY protos ./protos
COPY services ./services
# The gRPC code, generated as `make protos` does (absolute imports rewritten to our package).
RUN rm -rf services/common/pb \
    && mkdir -p services/common/pb \
    && /opt/tools/bin/python -m grpc_tools.protoc -Iprotos --python_out=services/common/pb \
       --grpc_python_out=services/common/pb --pyi_out=services/common/pb protos/proxyvision/v1/*.proto \
    && sed -i 's/^from proxyvision\.v1 import/from services.common.pb.proxyvision.v1 import/' \
       services/common/pb/proxyvision/v1/*.py services/common/pb/proxyvision/v1/*.pyi \
    && touch services/common/pb/__init__.py services/common/pb/proxyvision/__init__.py \
       services/common/pb/proxyvision/v1/__init__.py

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HOME=/var/cache/proxyvision/huggingface \
    HOME=/tmp
# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can check it; the model cache is its only
# writable directory (the chart mounts a volume there and /tmp, and keeps the root filesystem read-only).
RUN groupadd --system --gid 10001 proxyvision \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin proxyvision \
    && mkdir -p /var/cache/proxyvision \
    && chown 10001:10001 /var/cache/proxyvision
COPY --from=build /opt/venv /opt/venv
COPY --from=build /src/services /app/services
WORKDIR /app
USER 10001:10001
VOLUME ["/var/cache/proxyvision"]
EXPOSE 2000 50051 50052 9090
CMD ["python", "-m", "services.api_gateway", "--models-config", "/etc/proxyvision/models.yaml", "--host", "0.0.0.0", "--port", "2000"]
